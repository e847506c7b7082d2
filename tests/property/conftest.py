"""Property tests: make the sibling helper modules (`naive_book`, `exchange_harness`) importable.

Works under every pytest import mode (the default `prepend` and `importlib`).
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
