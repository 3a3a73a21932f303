# Quick start: `make demo` and `make test`. Both create .venv if missing and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: 2.13.0 installs the CPU build from this machine's disk
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/codecnn make-dataset --list datasets/samples.toml --frames 4 --out $(DEMO_DIR)/samples.h5
	$(BIN)/codecnn info $(DEMO_DIR)/samples.h5

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python scripts/bench_dataset.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
