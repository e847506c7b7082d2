"""`python -m lab`: see lab/cli.py and docs/lab.md."""

from __future__ import annotations

import sys

from lab.cli import main

sys.exit(main())
