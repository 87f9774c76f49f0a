"""Local token counters for upstream models: the ids the engine will really see.

Three kinds, named by a model's ``tokenizer`` entry:
- ``hf``: a HuggingFace ``tokenizer.json`` plus its chat template, rendered the way
  ``transformers.apply_chat_template`` renders it (sandboxed Jinja, trim/lstrip blocks).
- ``gguf``: a GGUF file's vocabulary, formatted by llama.cpp's own chat handler, so the count
  is what ``llama_cpp.server`` computes for the same file.
- ``tiktoken``: an encoding file (cl100k_base, o200k_base) with OpenAI's per-message rule.

Counters are synchronous; callers move long inputs off the event loop.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from tokenabacus.config import TokenizerConfig
from tokenabacus.metering.fastbpe import FastBPE, Unsupported

log = logging.getLogger(__name__)


class TokenizerError(Exception):
    pass


class Counter(Protocol):
    engine: str  # the library that does the counting, shown by /health
    # The engine renders a /v1/completions prompt as one user message through its chat template
    # (ms-swift's `swift deploy`): the prompt is counted as that chat, not as plain text.
    completions_as_chat: bool
    # Special ids the tokenizer adds around a plain prompt (a BOS for Llama-style vocabularies):
    # engines tokenize /v1/completions prompts with them, our count_text (used for replies) not.
    prompt_specials: int

    def count_chat(
        self, messages: list[dict], tools: list | None = None, template_kwargs: dict | None = None
    ) -> int: ...

    def count_text(self, text: str) -> int: ...


def has_uncountable_parts(messages: list[dict]) -> bool:
    """True if a message carries a content part that is not text (an image, audio, a file)."""
    return any(
        isinstance(m.get("content"), list) and any(p.get("type") != "text" for p in m["content"]) for m in messages
    )


def flatten_content(messages: list[dict]) -> list[dict]:
    """Text parts of a message become one string (as vLLM does for string-format templates)."""
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            m = dict(m)
            m["content"] = "\n".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
        elif c is None:
            m = dict(m)
            m["content"] = ""
        out.append(m)
    return out


# HuggingFace ------------------------------------------------------------------------------
def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise(message: str):
    raise TokenizerError(f"chat template: {message}")


def _token_text(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


class HFCounter:
    def __init__(self, cfg: TokenizerConfig) -> None:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        path = Path(cfg.path)
        tok_file = path / "tokenizer.json" if path.is_dir() else path
        if not tok_file.is_file():
            raise TokenizerError(f"tokenizer file not found: {tok_file}")
        raw = tok_file.read_text(encoding="utf-8")
        self.tokenizer = Tokenizer.from_str(raw)
        self.prompt_specials = len(self.tokenizer.encode("", add_special_tokens=True).ids)
        self.engine = "tokenizers"
        self._n = self._n_tokenizers
        if cfg.fast_bpe:
            self._use_fast_bpe(tok_file, orjson.loads(raw))
        conf_file = tok_file.parent / "tokenizer_config.json"
        conf = json.loads(conf_file.read_text(encoding="utf-8")) if conf_file.is_file() else {}
        template = None
        if cfg.chat_template:
            t = Path(cfg.chat_template)
            template = t.read_text(encoding="utf-8") if t.is_file() else cfg.chat_template
        else:
            template = conf.get("chat_template")
            jinja_file = tok_file.parent / "chat_template.jinja"
            if template is None and jinja_file.is_file():
                template = jinja_file.read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: use "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if not template:
            raise TokenizerError(f"no chat template for {tok_file} (set tokenizer.chat_template)")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.template = env.from_string(template)
        self.special = {
            k: _token_text(v) for k, v in conf.items() if k.endswith("_token") and _token_text(v) is not None
        }
        self.add_generation_prompt = cfg.add_generation_prompt
        self.completions_as_chat = cfg.completions_as_chat

    def render(self, messages: list[dict], tools: list | None = None, template_kwargs: dict | None = None) -> str:
        kwargs = dict(self.special)
        kwargs.update(template_kwargs or {})
        return self.template.render(
            messages=flatten_content(messages), tools=tools, add_generation_prompt=self.add_generation_prompt, **kwargs
        )

    def _use_fast_bpe(self, tok_file: Path, spec: dict) -> None:
        try:
            fast = FastBPE.from_tokenizer_json(spec)
        except Unsupported as e:
            log.info("%s: counting with tokenizers (fast BPE does not apply: %s)", tok_file, e)
            return
        problem = fast.verify(self.tokenizer, spec)
        if problem:
            log.warning("%s: counting with tokenizers; fast BPE disagreed: %s", tok_file, problem)
            return
        self.engine = "tiktoken"
        self._n = fast.count

    def _n_tokenizers(self, text: str) -> int:
        # Plain encode keeps the GIL. encode_batch_fast releases it, which measured worse: taking
        # the GIL back from the ledger threads stalled the event loop.
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_chat(self, messages: list[dict], tools: list | None = None, template_kwargs: dict | None = None) -> int:
        return self._n(self.render(messages, tools, template_kwargs))

    def count_text(self, text: str) -> int:
        return self._n(text)


# GGUF (llama.cpp) ------------------------------------------------------------------------
class _PromptCaptured(Exception):
    def __init__(self, prompt: list[int]) -> None:
        self.prompt = prompt


class _CaptureLlama:
    """Stands in for a Llama when calling a chat handler: the handler formats and tokenizes
    the messages with the real vocabulary, then we take its prompt ids instead of generating."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.verbose = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, prompt: Any, **_: Any) -> Any:
        if isinstance(prompt, str):
            prompt = self._llm.tokenize(prompt.encode("utf-8"), special=True)
        raise _PromptCaptured(list(prompt))


def chat_prompt_ids(llm: Any, messages: list[dict], tools: list | None = None) -> list[int]:
    """The token ids llama.cpp's chat handler feeds the model for these messages."""
    handler = llm.chat_handler or llm._chat_handlers.get(llm.chat_format)
    if handler is None:
        from llama_cpp import llama_chat_format

        handler = llama_chat_format.get_chat_completion_handler(llm.chat_format)
    try:
        handler(llama=_CaptureLlama(llm), messages=messages, tools=tools)
    except _PromptCaptured as c:
        return c.prompt
    raise TokenizerError("chat handler produced no prompt")


class GGUFCounter:
    engine = "llama.cpp"

    def __init__(self, cfg: TokenizerConfig) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:  # pragma: no cover - depends on the install
            raise TokenizerError(
                "gguf tokenizers need llama-cpp-python (pip install 'tokenabacus[embedded]')"
            ) from None
        if not Path(cfg.path).is_file():
            raise TokenizerError(f"GGUF file not found: {cfg.path}")
        self.llm = Llama(model_path=cfg.path, vocab_only=True, verbose=False)
        self.completions_as_chat = cfg.completions_as_chat
        # llama.cpp's server tokenizes a completions prompt with the vocabulary's own BOS rule.
        self.prompt_specials = len(self.llm.tokenize(b"", add_bos=True, special=False))
        self._lock = threading.Lock()  # one llama context is not safe across threads

    def count_chat(self, messages: list[dict], tools: list | None = None, template_kwargs: dict | None = None) -> int:
        with self._lock:
            return len(chat_prompt_ids(self.llm, flatten_content(messages), tools))

    def count_text(self, text: str) -> int:
        with self._lock:
            return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


# tiktoken ----------------------------------------------------------------------------------
_tiktoken_lock = threading.Lock()


def load_tiktoken_file(path: str, name: str | None = None):
    """Build a tiktoken Encoding from a local file; pattern and special tokens come from
    tiktoken's own definition of the encoding the file is named after."""
    import tiktoken
    from tiktoken import load as tk_load
    from tiktoken_ext import openai_public

    p = Path(path)
    if not p.is_file():
        raise TokenizerError(f"tiktoken encoding file not found: {path}")
    name = name or p.name.split(".")[0]
    ctor = openai_public.ENCODING_CONSTRUCTORS.get(name)
    if ctor is None:
        known = ", ".join(openai_public.ENCODING_CONSTRUCTORS)
        raise TokenizerError(f"unknown tiktoken encoding {name!r}; name the file after one of {known}")
    ranks = tk_load.load_tiktoken_bpe(str(p))
    with _tiktoken_lock:  # swap the loader so the constructor reads our file, never the network
        saved = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, **_k: ranks
        try:
            spec = ctor()
        finally:
            openai_public.load_tiktoken_bpe = saved
    return tiktoken.Encoding(**spec)


class TiktokenCounter:
    engine = "tiktoken"

    # OpenAI's published rule for chat models: every message costs 3 tokens of framing,
    # a name 1 more, and the reply is primed with 3.
    TOKENS_PER_MESSAGE, TOKENS_PER_NAME, REPLY_PRIMING = 3, 1, 3

    def __init__(self, cfg: TokenizerConfig) -> None:
        self.enc = load_tiktoken_file(cfg.path)
        self.openai_chat = cfg.openai_chat
        self.completions_as_chat = cfg.completions_as_chat
        self.prompt_specials = 0  # OpenAI's encodings add nothing to a prompt

    def _n(self, text: str) -> int:
        return len(self.enc.encode(text, disallowed_special=()))

    def count_chat(self, messages: list[dict], tools: list | None = None, template_kwargs: dict | None = None) -> int:
        if not self.openai_chat:  # plain text of the messages, no framing
            return sum(self._n(m["content"]) for m in flatten_content(messages))
        n = 0
        for m in flatten_content(messages):
            n += self.TOKENS_PER_MESSAGE
            for k, v in m.items():
                if isinstance(v, str):
                    n += self._n(v)
                if k == "name":
                    n += self.TOKENS_PER_NAME
            for call in m.get("tool_calls") or ():  # what the model is shown of its earlier calls
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict):
                    n += sum(self._n(v) for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str))
        return n + self.REPLY_PRIMING

    def count_text(self, text: str) -> int:
        return self._n(text)


def build_counter(cfg: TokenizerConfig) -> Counter:
    if cfg.type == "hf":
        return HFCounter(cfg)
    if cfg.type == "gguf":
        return GGUFCounter(cfg)
    return TiktokenCounter(cfg)
