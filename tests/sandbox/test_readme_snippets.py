"""The README's API tour, run as written against a real sandbox, and the docs' links.

- Every ```bash and ```python block under "## A tour of the API" is run, in order, in one
  bash process (so the variables of one block reach the next, as in the newcomer's shell),
  against `python -m service.demo` (what `make sandbox` runs) started on a free port: the
  snippets' `127.0.0.1:8000` is rewritten to that port and nothing else is changed. A block
  preceded by `<!-- not run: <why> -->` is skipped (`make sandbox` itself); any other fence
  in the tour must be bash or python, so no block escapes the test unnoticed.
- Python blocks run with this interpreter (the README says `.venv/bin/python`) from that
  same shell, so they see what the bash blocks exported.
- What a block prints must match the README: each `# {...}` / `# [...]` line in a block shows
  an output, and every field it names must be printed; a field shown with a value without
  digits (`"status":"new"`, `"avg_price":null`, `"fills":[]`) must be printed with that
  value. Values with digits (ids, prices, seqs) or an ellipsis differ from run to run.
- After the tour the demo market still runs (nothing in the tour may break it), and the
  account the tour created is the first after the demo's own (#7, as the README says).
- Every relative link in README.md, api/README.md and docs/*.md resolves (file and
  heading), and nothing points outside the repository (`../shared`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOUR_HEADING = "## A tour of the API"
README_BASE = "127.0.0.1:8000"
ADMIN_TOKEN = "sandbox-admin-token"  # what the README's ADMIN header uses
MARKER = "@@ block "


@dataclass(frozen=True)
class Block:
    index: int
    lang: str
    code: str
    not_run: str | None  # the reason given in `<!-- not run: ... -->`, if any


def _tour(text: str) -> str:
    start = text.index(TOUR_HEADING)
    end = text.find("\n## ", start + len(TOUR_HEADING))
    return text[start : end if end != -1 else len(text)]


def tour_blocks(text: str) -> list[Block]:
    """Every fenced block of the tour, with the not-run marker on the line before it."""
    blocks = []
    fence = re.compile(r"^(?:<!-- not run:?(?P<why>[^\n]*?)-->\n)?```(?P<lang>[^\n]*)\n(?P<code>.*?)^```$", re.M | re.S)
    for i, m in enumerate(fence.finditer(_tour(text))):
        why = m.group("why")
        blocks.append(Block(i, m.group("lang").strip(), m.group("code"), None if why is None else why.strip()))
    return blocks


_KEY = re.compile(r'"(\w+)":')
_PLAIN = re.compile(r'"((?:[^"\\]|\\.)*)"|(null|true|false|\[\]|\{\})(?=[,}\]])')


def expected_fragments(code: str) -> list[str]:
    """What the `# {...}` / `# [...]` output lines of a block require in its output."""
    needed: list[str] = []
    for line in code.splitlines():
        shown = re.match(r"\s*# ([\[{].*)$", line)
        if shown is None:
            continue
        for key in _KEY.finditer(shown.group(1)):
            value = _PLAIN.match(shown.group(1), key.end())
            literal = value.group(0) if value else None
            varies = literal is None or re.search(r"\d|…|\.\.\.", literal)
            needed.append(f'"{key.group(1)}":' if varies else f'"{key.group(1)}":{literal}')
    return needed


def test_tour_when_read_has_runnable_blocks_each_bash_or_python_or_marked_not_run() -> None:
    blocks = tour_blocks(README.read_text())
    run = [b for b in blocks if b.not_run is None]
    assert len(run) >= 6, blocks
    assert all(b.lang in ("bash", "python") for b in run), [b.lang for b in run]
    assert {b.lang for b in run} == {"bash", "python"}
    for b in blocks:
        if b.not_run is not None:
            assert b.not_run, f"block {b.index}: say why it is not run"
    # the ways the old tour failed against `make sandbox`
    text = "".join(b.code for b in run)
    assert "make run" not in text and "mark-price" not in text
    assert f"http://{README_BASE}" in text and f"ws://{README_BASE}" in text
    assert f"'X-Admin-Token: {ADMIN_TOKEN}'" in text
    assert re.sub(r"127\.0\.0\.1:8000", "", text).count(":8000") == 0
    # every run block but the setup shows what it prints
    assert sum(1 for b in run if expected_fragments(b.code)) >= len(run) - 2


@pytest.mark.parametrize(
    ("shown", "needed"),
    [
        ('# {"order_id":12,"status":"new","avg_price":null,"fills":[]}',
         ['"order_id":', '"status":"new"', '"avg_price":null', '"fills":[]']),
        ('# {"api_key":"MZYC…","channels":["account"],"data":{"type":"subscribed"}}',
         ['"api_key":', '"channels":', '"data":', '"type":"subscribed"']),
        ("# prose, not an output", []),
    ],
    ids=["literals-kept-digits-dropped", "ellipsis-arrays-nested", "prose"],
)
def test_expected_fragments_when_reading_an_output_line_keep_only_stable_values(shown: str, needed: list[str]) -> None:
    assert expected_fragments(shown) == needed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sandbox:
    proc: subprocess.Popen[bytes]
    base: str
    port: int
    log: Path


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """`make sandbox` on a free port: the demo market and the service it starts."""
    port = _free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_") and k != "MAKELEVEL"}
    # explicit, so this does not depend on the demo's loopback default being the same token
    env.update(EXCHANGE_ADMIN_TOKEN=ADMIN_TOKEN, EXCHANGE_DATA_DIR=str(data), TMPDIR=str(tmp_path))
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.demo", "--host", "127.0.0.1", "--port", str(port),
             "--seconds", "0", "--data-dir", str(data)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    box = Sandbox(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        _wait_for_market(box)
        yield box
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the demo stops the service it started
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _wait_for_market(box: Sandbox, timeout: float = 60) -> None:
    """Until the demo's six accounts exist and the maker quotes both sides."""
    admin = {"X-Admin-Token": ADMIN_TOKEN}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert box.proc.poll() is None, box.log.read_text()
        try:
            six = httpx.get(f"{box.base}/v1/admin/accounts/6", headers=admin, timeout=2)
            book = httpx.get(f"{box.base}/v1/orderbook/BTC-PERP?depth=1", timeout=2).json()
            if six.status_code == 200 and book.get("bids") and book.get("asks"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the demo market did not start:\n" + box.log.read_text())


def _script(blocks: list[Block], port: int, workdir: Path) -> str:
    """One bash script running the tour's blocks in order, a marker line before each."""
    lines = ["set -eo pipefail"]
    for b in blocks:
        code = b.code.replace(README_BASE, f"127.0.0.1:{port}")
        lines.append(f"printf '\\n{MARKER}%d\\n' {b.index}")
        if b.lang == "python":
            path = workdir / f"tour_block_{b.index}.py"
            path.write_text(code)
            lines.append(f'"$TOUR_PYTHON" "{path}"')
        else:
            lines.append(code)
    return "\n".join(lines) + "\n"


def _outputs(stdout: str) -> dict[int, str]:
    parts = re.split(rf"^{re.escape(MARKER)}(\d+)$", stdout, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.mark.slow
def test_tour_when_pasted_against_the_sandbox_prints_what_the_readme_shows(sandbox: Sandbox, tmp_path: Path) -> None:
    blocks = [b for b in tour_blocks(README.read_text()) if b.not_run is None]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.pop("API_KEY", None)
    env["TOUR_PYTHON"] = sys.executable
    if shutil.which("python3", path=env.get("PATH")) is None:  # the README needs one on PATH
        shim = tmp_path / "bin"
        shim.mkdir()
        (shim / "python3").symlink_to(sys.executable)
        env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    bash = shutil.which("bash") or pytest.skip("no bash")
    out = subprocess.run(
        [bash, "-c", _script(blocks, sandbox.port, tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == "", out.stderr
    printed = _outputs(out.stdout)
    assert sorted(printed) == [b.index for b in blocks], out.stdout
    for b in blocks:
        missing = [f for f in expected_fragments(b.code) if f not in printed[b.index]]
        assert not missing, f"block {b.index} printed:\n{printed[b.index]}\nwithout {missing}"
    # the README: "yours starts at #7", and the WebSocket block authenticated as it
    assert '"account_id":7,' in out.stdout
    assert '"type":"authenticated","account_id":7' in out.stdout
    # the tour leaves the demo market running: still quoting both sides
    assert sandbox.proc.poll() is None, sandbox.log.read_text()
    deadline = time.monotonic() + 5  # a look may fall between the maker's cancel and its new quotes
    while True:
        time.sleep(0.3)
        book = httpx.get(f"{sandbox.base}/v1/orderbook/BTC-PERP?depth=1", timeout=5).json()
        if (book["bids"] and book["asks"]) or time.monotonic() > deadline:
            break
    assert book["bids"] and book["asks"], book
    assert "Traceback" not in sandbox.log.read_text()


# -- links ---------------------------------------------------------------------------------

DOCS = [README, ROOT / "api" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_doc_when_read_links_only_to_files_and_headings_in_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "SPEC.md" not in text
    broken = []
    for target in _LINK.findall(re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        inside = ROOT in path.parents or path == ROOT
        missing_heading = bool(anchor) and path.suffix == ".md" and path.exists() and anchor not in _anchors(path)
        if not inside or not path.exists() or missing_heading:
            broken.append(target)
    assert not broken, broken
