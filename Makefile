# Two entry points, both of which set everything up from a fresh clone:
#   make run    create .venv, install the project, run the main job
#   make test   create .venv, install the project with its test extra, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/python searches/ablation_uae.py

# Two pytest workers, a test file each at a time (--dist loadfile keeps a file's module
# fixtures, e.g. one smoke search, in one process): about half of a search test's wall time is
# waiting (Ray starting and stopping, a trial's worker importing torch), which the other
# worker fills. `pytest -n 0` runs serially.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) *.egg-info
