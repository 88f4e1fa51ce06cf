# fedge — two commands: `make demo` and `make test` (both set everything up first).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit bench bench-full clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build on this machine's disk. The package's torch range is
# then already satisfied, so pip never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/fedge demo

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

test: install lint typecheck
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

unit: install
	$(PY) -m pytest -q -m "not integration and not slow"

# every benchmark in turn: quick settings, results in a scratch directory (bench-full: the
# README's settings, results in benchmarks/results; it takes hours on 2 cores)
bench: install
	$(PY) benchmarks/run_all.py

bench-full: install
	$(PY) benchmarks/run_all.py --full

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
