"""The ADL lab (SPEC §15): one crash, every ADL policy, the same starting state.

`python -m lab` builds a population of accounts and positions (a file, or a seeded
synthetic one) and a price path (one mark move, or a feed CSV), runs the path once per ADL
policy through the real engine from a copy of the same starting state, and writes the §15
metrics per policy as Markdown, CSV, JSON, PNG plots and one self-contained HTML report.

Modules, in the order a run uses them:

- `population.py`: accounts and positions (the synthetic generator, JSON/CSV files);
- `paths.py`: the price path (`--crash 25%` or a CSV `offset_s,symbol,price`);
- `scenario.py`: the starting state, built through `Engine.apply` (accounts trade their
  positions against a market maker, who then quotes a thin book);
- `run.py`: one policy over the path, the events folded into a `RunResult`;
- `metrics.py`: the §15 metrics, exact (integers and fractions), defined in docs/lab.md;
- `sybil.py`: the top winner split into k accounts, run again;
- `report.py` (Markdown, CSV, JSON, HTML) and `plots.py` (PNG; the only module that
  imports matplotlib, an optional extra);
- `cli.py`: the command line, and the order of all of the above; `numbers.py` (exact
  decimal strings) and `progress.py` (the stderr progress bar) serve it.

Imports `engine/` only, never `service/` or `api/`. Deterministic: the same arguments give
byte-identical JSON (no clock, no floats in it; the synthetic generator's floats are turned
into integers once, by one seeded `random.Random`).
"""
