# `make test` and `make demo` set up .venv from the package registries and local disk, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := .ci/constraints.txt

.PHONY: install test demo clean

$(STAMP): setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) torch torchvision setuptools wheel ninja
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) --no-build-isolation -e ".[test]"
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/actrack-fast demo

clean:
	rm -rf $(VENV) build *.egg-info
