# Two commands matter: `make demo` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The TweetEval split lives beside the repo, never inside it.
export TWEETEVAL_DIR ?= $(abspath ../shared/data/tweeteval-sentiment)
# Quieter, faster pip; no version self-check.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck unit train bench clean help
help:
	@echo "make demo   - stream brand mentions through broker, workers and API with a live table (Ctrl-C stops)"
	@echo "make test   - install, lint, type-check and run the whole test suite"
	@echo "make train  - the default training run (autotune + gate), see README"
	@echo "make bench  - benchmarks under bench/"

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m worker.demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

train: install
	$(PY) -m training.train $(TRAIN_ARGS)

bench: install
	command -v wrk >/dev/null || (apt-get install -y wrk || echo "install wrk to run the API benchmark")
	$(PY) -m bench.api_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
