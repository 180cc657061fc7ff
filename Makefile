# Two commands do all setup on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow test-all lint format bench clean

setup: $(STAMP)

# torch first, pinned to the CPU build (any other spec may pull a multi-GB CUDA build),
# then the project in editable mode with its dev tools.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The whole closed loop, live, until Ctrl-C. ARGS=--once: one cycle, exit 0 only if the loop
# closed; ARGS='-b HOST:PORT': an external Kafka; `ray-app demo --help` lists the rest.
demo: setup
	$(VENV)/bin/ray-app demo $(ARGS)

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check ray_app jobs tests benchmarks
	$(VENV)/bin/ruff format --check ray_app jobs tests benchmarks
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix ray_app jobs tests benchmarks
	$(VENV)/bin/ruff format ray_app jobs tests benchmarks

clean:
	rm -rf $(VENV) data/demo .pytest_cache .mypy_cache .ruff_cache
