# Two entry points: `make demo` (the whole pipeline, offline, on a bundled PubMedQA sample) and
# `make test` (lint, types, tests). Both set up .venv from nothing first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO ?= data/demo
DEMO_ARGS ?=

.PHONY: setup system-deps test lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a bare torch requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,dev,distributed]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the tests use: redis-server (distributed crawl), chromium (report page).
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
		apt-get install -y -qq redis-server chromium >/dev/null; fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint system-deps
	$(BIN)/pytest -q

# `pipeline run` against a local E-utilities server; a second `make demo` skips the finished
# steps, `make demo DEMO_ARGS=--fresh` starts over.
demo: setup
	$(BIN)/python demo/run_demo.py --out $(DEMO) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
