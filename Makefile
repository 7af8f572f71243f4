# `make test` and `make demo` set up .venv from the package registries and local disk, then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := .ci/constraints.txt

.PHONY: install test demo clean

# The editable install also compiles the C++/CUDA extension actrack_fast._C (csrc/) against the venv's torch;
# setup.py finds the CUDA toolkit and sets the GPU arch itself. MAX_JOBS bounds parallel compile jobs.
EXTENSION_SOURCES := $(wildcard csrc/*.h csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu)

$(STAMP): setup.py pyproject.toml $(CONSTRAINTS) $(EXTENSION_SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) torch torchvision setuptools wheel ninja
	MAX_JOBS=2 $(BIN)/python -m pip install -q -c $(CONSTRAINTS) --no-build-isolation -e ".[test]"
	touch $@

install: $(STAMP)

# The FPS suite runs too (on CPU: tiny config, a few calls per case) so CI exercises the benchmark code.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q benchmarks/test_fps.py --benchmark-columns=median,rounds --benchmark-sort=name

DEMO_DIR ?= demo_output
# Generate a short sequence (a textured patch moving over a natural image) and track it through the CLI.
demo: $(STAMP)
	$(BIN)/actrack-fast generate-sequence $(DEMO_DIR)/sequence
	$(BIN)/actrack-fast track $(DEMO_DIR)/sequence --box "$$(head -n 1 $(DEMO_DIR)/sequence/groundtruth.txt)" \
		--output $(DEMO_DIR)/annotated.mp4 --results $(DEMO_DIR)/boxes.txt

clean:
	rm -rf $(VENV) build *.egg-info actrack_fast/_C*.so
