"""Benchmarks (python -m bench.<name>): tables with ratios measured in the same run."""

import native

native.use()  # the compiled engine when one is built (native/), chosen before the engine loads
