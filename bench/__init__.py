"""Benchmarks (python -m bench.<name>): tables with ratios measured in the same run."""
