# One command on a fresh machine with only Python 3.11: `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test venv run sandbox lint bench clean compiled

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lab]'
	touch $@

venv: $(BIN)/.installed

# The suite against the Python engine, then the engine's own tests (scenarios, golden
# journals, properties, the lab, durability) against the mypyc-compiled one (native/).
COMPILED_TESTS = tests/scenario tests/golden tests/unit tests/property tests/lab tests/durability

# One pytest worker per core (pytest-xdist; every worker starts its own services and Redis).
WORKERS = -n auto --maxprocesses=4

test: venv
	$(BIN)/python -m native.build --if-needed
	EXCHANGE_ENGINE=python $(BIN)/python -m pytest -p no:cacheprovider $(WORKERS)
	EXCHANGE_ENGINE=compiled PROPERTY_SCALE=0.25 $(BIN)/python -m pytest -p no:cacheprovider $(WORKERS) $(COMPILED_TESTS)

# The engine compiled with mypyc into native/_build (about a minute): `make run` and
# `make sandbox` use it when it matches the sources (EXCHANGE_ENGINE=python: the Python one).
compiled: venv
	$(BIN)/python -m native.build --if-needed

# Where `run` and `sandbox` listen: `make sandbox PORT=8001` if 8000 is taken. Set on the
# command line only: HOST and PORT in the environment are not read.
HOST = 127.0.0.1
PORT = 8000

run: venv
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

# The exchange on http://$(HOST):$(PORT) with a live demo market, until Ctrl-C (which prints a
# summary); CRASH=25% adds a crash, liquidations and ADL.
sandbox: venv
	$(BIN)/python -m service.demo --host $(HOST) --port $(PORT) --seconds 0 $(if $(CRASH),--crash $(CRASH))

lint: venv
	$(BIN)/ruff check engine service api tests bench native
	$(BIN)/mypy engine service api native

bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.engine_bench
	$(BIN)/python -m bench.risk_bench

clean:
	rm -rf $(VENV) native/_build
