# One command on a fresh machine with only Python 3.11: `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test venv run sandbox lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lab]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/python -m pytest -p no:cacheprovider

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
	$(BIN)/ruff check engine service api tests bench
	$(BIN)/mypy engine service api

bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.engine_bench
	$(BIN)/python -m bench.risk_bench

clean:
	rm -rf $(VENV)
