"""The PNG plots and the self-contained HTML report (needs the `lab` extra: matplotlib).

CI installs `.[dev]` only, so without matplotlib this module is skipped, with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="plots need the lab extra: pip install -e '.[lab]'")

from lab.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_lab_when_matplotlib_installed_draws_four_plots_and_inlines_them(tmp_path: Path) -> None:
    assert main(["--seed", "5", "--accounts", "120", "--crash", "20%", "--steps", "3", "--sybil-k", "0",
                 "--out", str(tmp_path)]) == 0
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["fund.png", "haircuts.png", "lorenz.png", "top_winners.png"]
    for name in pngs:
        assert (tmp_path / "plots" / name).read_bytes().startswith(PNG_MAGIC)
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r"(src|href)=\"(?!data:)", page), "the page loads nothing from outside"
    assert "http://" not in page and "https://" not in page
    assert "![Lorenz curve" in (tmp_path / "report.md").read_text()
