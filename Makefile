# make train / make test set up .venv on first use (about 80 s and 5 GB: the torch stack), then run.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: train test test-fast ui lint format bench clean-store help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Re-install only when the project's dependencies change.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)  ## train the default experiment on the CPU, logged to ./mlflow.db (ARGS="key=value ...")
	$(VENV)/bin/gru-mm-train $(ARGS)

# The tests run in TEST_WORKERS pytest-xdist processes (tests that share a module fixture or the SLURM
# cluster stay on one worker; TEST_WORKERS=0: one process). Three on two cores keep both busy while a test
# waits for a server or a SLURM job: on the quiet 2-core VM with SLURM, all 814 tests, 10 min 20 s (the same
# day 11-12 min: the machine's speed varies; with 2 workers ~4 % slower; docs/benchmarks.md, "Test suite time").
TEST_WORKERS ?= 3
PARALLEL = -n $(TEST_WORKERS) --dist loadgroup
# test-fast has no CLI-spawning benchmarks, and 4 workers take it to 2.6 min on 2 cores (676 tests)
FAST_WORKERS ?= 4

test: $(STAMP)  ## run the whole test suite, in 3 processes (TEST_WORKERS=N; 0: one process)
	$(VENV)/bin/python -m pytest $(PARALLEL) $(ARGS)

test-fast: $(STAMP)  ## the tests not marked slow or service, in 4 processes (about 2.5 minutes)
	$(VENV)/bin/python -m pytest -n $(FAST_WORKERS) --dist loadgroup -m "not slow and not service" $(ARGS)

ui: $(STAMP)  ## the MLflow UI on http://127.0.0.1:5000 over the project's store
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

lint: $(STAMP)  ## ruff: lint rules and formatting
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: $(STAMP)  ## ruff format, then the lint fixes (import sorting, ...)
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

bench: $(STAMP)  ## GRU benchmark on the CPU (quick grid)
	$(VENV)/bin/gru-mm-bench gru --quick --out docs/bench-gru-cpu-quick.json
