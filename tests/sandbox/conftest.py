"""Sandbox tests: the files of `docker compose` read as text, and `make sandbox`'s demo run for
real in subprocesses (the slow ones are marked `slow`: `pytest -m "not slow"` skips them)."""
