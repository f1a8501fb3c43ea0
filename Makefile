# distilvit-web tasks. `make help` lists them. Everything runs inside .venv (created by `make setup`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here, not in pyproject: an open requirement pulls a multi-GB CUDA build where a CPU wheel
# is on disk. On a CUDA machine the same pin fetches the CUDA build.
TORCH ?= torch==2.13.0

DATASET ?= flickr30k
EPOCHS ?= 3
PRESET ?= smollm-135m
OUTPUT ?= runs/$(PRESET)-$(DATASET)

.PHONY: help setup quickstart test train train-quick clean

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: DATASET=$(DATASET) EPOCHS=$(EPOCHS) PRESET=$(PRESET) OUTPUT=$(OUTPUT)"

$(BIN)/distilvit-web: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(BIN)/distilvit-web ## Create .venv and install the package with test dependencies

quickstart: setup ## Offline main job: train the tiny preset, export it (fp32 + q8), verify parity, serve the demo
	$(BIN)/distilvit-web quickstart --serve

test: setup ## Run the test suite (offline, CPU; two workers, a test module at a time each: tests/conftest.py)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

train-quick: setup ## Tiny preset on synthetic data (CPU, a few minutes)
	$(BIN)/distilvit-web train --preset tiny --dataset synthetic --output-dir runs/tiny

train: setup ## Real preset: make train DATASET=flickr EPOCHS=5 (downloads models and data)
	$(BIN)/distilvit-web train --preset $(PRESET) --dataset $(DATASET) --num-train-epochs $(EPOCHS) --output-dir $(OUTPUT)

clean: ## Remove .venv, runs/ and exports/
	rm -rf $(VENV) runs exports
