# Every target sets itself up: a fresh clone needs only python3 (3.11 or newer) and git.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-postgres bench lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo/run_demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Both store backends: scripts/with-postgres.sh installs PostgreSQL if it can (root with apt-get),
# starts a throwaway server on 127.0.0.1 for the run and stops it afterwards. The browser tests use
# Debian's Chromium, which scripts/ensure-chromium.sh installs the same way.
test: $(STAMP) lint typecheck
	bash scripts/ensure-chromium.sh
	bash scripts/with-postgres.sh $(BIN)/python -m pytest

# Only the tests that run on PostgreSQL.
test-postgres: $(STAMP)
	bash scripts/with-postgres.sh $(BIN)/python -m pytest -k postgres

# Every benchmark in one run, SQLite and PostgreSQL, each figure beside its reference; results in
# benchmarks/results.md. Takes about 20 minutes on 2 cores, most of it building a million-record ledger.
bench: $(STAMP)
	bash scripts/with-postgres.sh sh -c '$(BIN)/python benchmarks/decision_bench.py && \
		$(BIN)/python benchmarks/service_bench.py && \
		$(BIN)/python benchmarks/proxy_bench.py && \
		$(BIN)/python benchmarks/ledger_bench.py'

clean:
	rm -rf $(VENV) build *.egg-info
