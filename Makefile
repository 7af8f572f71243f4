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

DEMO_DIR ?= demo_output
# Generate a short sequence (a textured patch moving over a natural image) and track it through the CLI.
demo: $(STAMP)
	$(BIN)/actrack-fast generate-sequence $(DEMO_DIR)/sequence
	$(BIN)/actrack-fast track $(DEMO_DIR)/sequence --box "$$(head -n 1 $(DEMO_DIR)/sequence/groundtruth.txt)" \
		--output $(DEMO_DIR)/annotated.mp4 --results $(DEMO_DIR)/boxes.txt

clean:
	rm -rf $(VENV) build *.egg-info
