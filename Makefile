# The two commands of the README. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/attnlab demo --workdir runs/demo

# The default run (what CI runs): everything but the tests marked `slow`: 7 min 19 s
# (625 passed, 2 GPU-only skipped; 2 idle CPU cores, 2026-12-06). Two workers for the two cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

# Everything, the `slow` tests included (long reliability runs, fuzzing, extra gradient grids).
test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs/demo
