"""prompt_tokens reported by the gateway equals the reference tokenizer's count, for every corpus
case, for the embedded model and for upstream models with a configured tokenizer."""

from __future__ import annotations

import pytest
from llama_cpp import Llama, llama_chat_format

from conftest import EMBEDDED, TIKTOKEN_DIR, gguf_path, qwen_dir
from corpus import CORPUS

CASES = sorted(CORPUS)


@pytest.fixture(scope="module")
def smol_reference():
    """SmolLM2's own vocabulary and the chat template stored in its GGUF, applied the way
    llama.cpp applies it (render, then tokenize with special tokens parsed)."""
    vocab = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    template = vocab.metadata["tokenizer.chat_template"]
    eos = vocab._model.token_get_text(vocab.token_eos())
    bos = vocab._model.token_get_text(vocab.token_bos())
    formatter = llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)

    def count(messages):
        result = formatter(messages=messages)
        return len(vocab.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True))

    return count


@pytest.fixture(scope="module")
def qwen_reference():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_dir()), local_files_only=True)
    return lambda messages: len(
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    )


@pytest.mark.parametrize("case", CASES)
def test_embedded_prompt_tokens_exact(embedded_gw, embedded_key, smol_reference, case):
    messages = CORPUS[case]
    r = embedded_gw.client(embedded_key).chat.completions.create(model=EMBEDDED, messages=messages, max_tokens=1)
    assert r.usage.prompt_tokens == smol_reference(messages)


@pytest.mark.parametrize("case", CASES)
def test_embedded_stream_prompt_tokens_exact(embedded_gw, embedded_key, smol_reference, case):
    messages = CORPUS[case]
    chunks = list(
        embedded_gw.client(embedded_key).chat.completions.create(
            model=EMBEDDED, messages=messages, max_tokens=2, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.prompt_tokens == smol_reference(messages)


@pytest.mark.parametrize("case", CASES)
def test_upstream_gguf_tokenizer_matches_reference_and_engine(upstream_gw, upstream_key, smol_reference, case):
    messages = CORPUS[case]
    raw = upstream_gw.client(upstream_key).chat.completions.with_raw_response.create(
        model="smol-gguf", messages=messages, max_tokens=1
    )
    usage = raw.parse().usage
    assert usage.prompt_tokens == smol_reference(messages)
    rec = upstream_gw.record(raw.headers["x-request-id"])
    # The upstream (llama.cpp server on the same GGUF) counted the same ids.
    assert rec["usage_source"] == "tokenizer"
    assert rec["upstream_prompt_tokens"] == rec["prompt_tokens"] == usage.prompt_tokens


@pytest.mark.parametrize("case", CASES)
def test_upstream_hf_tokenizer_matches_transformers(upstream_gw, upstream_key, qwen_reference, case):
    messages = CORPUS[case]
    r = upstream_gw.client(upstream_key).chat.completions.create(model="qwen-hf", messages=messages, max_tokens=1)
    assert r.usage.prompt_tokens == qwen_reference(messages)


def test_completion_tokens_are_generated_ids(embedded_gw, embedded_key):
    """Streamed completion tokens are the engine's generated ids, not a count of chunks: a
    non-streamed and a streamed request with the same seed and greedy sampling agree."""
    client = embedded_gw.client(embedded_key)
    messages = CORPUS["chinese"]
    full = client.chat.completions.create(model=EMBEDDED, messages=messages, max_tokens=40, temperature=0, seed=7)
    chunks = list(
        client.chat.completions.create(
            model=EMBEDDED,
            messages=messages,
            max_tokens=40,
            temperature=0,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_tiktoken_counter_follows_openai_rule():
    """The tiktoken counter, fed the encoding file installed from the litellm wheel, matches
    tiktoken's encoder plus OpenAI's per-message framing."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from tokenabacus.config import TokenizerConfig
    from tokenabacus.metering.tokenizers import TiktokenCounter

    path = TIKTOKEN_DIR / "o200k_base.tiktoken"
    counter = TiktokenCounter(TokenizerConfig(type="tiktoken", path=str(path)))
    ranks = load_tiktoken_bpe(str(path))
    assert counter.enc.n_vocab >= len(ranks)
    enc = counter.enc
    # Hand-checked anchor: "hello world" is two o200k tokens.
    assert enc.encode("hello world") == [24912, 2375]
    messages = CORPUS["system_multi_turn"] + [{"role": "user", "name": "alice", "content": "hi"}]
    expected = (
        sum(
            3
            + len(enc.encode(m["content"]))
            + len(enc.encode(m["role"]))
            + (1 + len(enc.encode(m["name"])) if "name" in m else 0)
            for m in messages
        )
        + 3
    )
    assert counter.count_chat(messages) == expected
    assert isinstance(enc, tiktoken.Encoding)


@pytest.mark.parametrize("case", ["chinese", "system_multi_turn", "emoji"])
def test_upstream_tiktoken_model_counts_through_gateway(upstream_gw, upstream_key, case):
    from tokenabacus.config import TokenizerConfig
    from tokenabacus.metering.tokenizers import TiktokenCounter

    messages = CORPUS[case]
    reference = TiktokenCounter(TokenizerConfig(type="tiktoken", path=str(TIKTOKEN_DIR / "o200k_base.tiktoken")))
    r = upstream_gw.client(upstream_key).chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=1)
    assert r.usage.prompt_tokens == reference.count_chat(messages)


def test_embedded_reports_kv_cache_hits_as_cached_tokens(embedded_gw, embedded_key):
    """A second request sharing a long prefix with the first is served partly from llama.cpp's
    KV cache; cached_tokens is exactly the shared prefix of the two prompts' ids."""
    vocab = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    formatter = llama_chat_format.Jinja2ChatFormatter(
        template=vocab.metadata["tokenizer.chat_template"],
        eos_token=vocab._model.token_get_text(vocab.token_eos()),
        bos_token=vocab._model.token_get_text(vocab.token_bos()),
    )

    def ids(messages):
        result = formatter(messages=messages)
        return vocab.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    system = {
        "role": "system",
        "content": "你是一名资深的市场营销顾问。" + "Answer briefly and in the user's language. " * 8,
    }
    first = [system, {"role": "user", "content": "请给出三个卖点。"}]
    second = [system, {"role": "user", "content": "Now give me one slogan."}]
    client = embedded_gw.client(embedded_key)
    client.chat.completions.create(model=EMBEDDED, messages=first, max_tokens=2, temperature=0)
    raw = client.chat.completions.with_raw_response.create(model=EMBEDDED, messages=second, max_tokens=2, temperature=0)
    r = raw.parse()
    a, b = ids(first), ids(second)
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert shared > 50
    assert r.usage.prompt_tokens == len(b)
    assert r.usage.prompt_tokens_details.cached_tokens == shared
    assert embedded_gw.record(raw.headers["x-request-id"])["cached_tokens"] == shared
