# Quick start: `make demo` and `make test`. Both create .venv if missing and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test test-fast lint bench clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned (setup.py says which build PyPI serves; this project's machines have a local CPU wheel)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The whole mission on the embedded real sequences, under 20 minutes on 2 CPU cores:
# dataset (bigbuckbunny trains, bikes validates, carphone is held out) -> RDN training with a time
# limit -> evaluation on the held-out sequence at QP 22/27/32/37 -> report and plots.
DEMO_TRAIN_SECONDS ?= 540
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/codecnn make-dataset --list datasets/samples.toml --frames 6 --out $(DEMO_DIR)/samples.h5
	$(BIN)/codecnn info $(DEMO_DIR)/samples.h5
	rm -rf $(DEMO_DIR)/run
	$(BIN)/codecnn train rdn --data $(DEMO_DIR)/samples.h5 --out $(DEMO_DIR)/run --blocks 2 --layers 4 --growth 16 \
	  --features 32 --qp-map --loss l2 --lr 5e-4 --batch 16 --patch 64 --val-every 100 \
	  --time-limit $(DEMO_TRAIN_SECONDS) --workers 1
	$(BIN)/codecnn evaluate --checkpoint $(DEMO_DIR)/run/best.pt --data $(DEMO_DIR)/samples.h5 --split test \
	  --out $(DEMO_DIR)/report
	@echo "report: $(DEMO_DIR)/report/report.md; training curves: $(DEMO_DIR)/run/curves.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Skips the tests marked slow (DDP, interrupt/resume, sanitizer fuzz); `make test` runs everything.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/clang-format --dry-run -Werror hm_bridge/cpp/*.h hm_bridge/cpp/*.cpp

bench: $(STAMP)
	$(BIN)/python scripts/bench_dataset.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
