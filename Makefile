# The two commands a newcomer runs: `make pipeline` (the embedded default, end to end) and
# `make test`. Both build the virtual environment first if it is missing or out of date.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: pipeline test env clean-results

# Rules call `python`; the environment's bin directory goes first on PATH so they get this one.
export PATH := $(abspath $(BIN)):$(PATH)

pipeline: $(STAMP)
	snakemake --cores all

test: $(STAMP)
	python -m pytest -n auto --dist worksteal

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

clean-results:  # everything the workflow wrote; results/README.md (tracked) stays
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf logs .snakemake
