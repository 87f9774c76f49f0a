"""Completion tokens are the ids the engine generated: a reply cut inside a multi-byte character
is billed at the engine's count when our count of its text makes that plausible; implausible
claims and end-of-text ids are not billed."""

from __future__ import annotations

import httpx
import pytest
from llama_cpp import Llama

from conftest import GatewayProc, gguf_path

SENTENCE = "我爱北京天安门，天安门上太阳升。伟大领袖毛主席，指引我们向前进。"


@pytest.fixture(scope="module")
def vocab():
    return Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)


def count(vocab, text: str) -> int:
    """What the gateway's gguf counter says of a text (its own rule, checked by the exactness tests)."""
    return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def cut_inside_a_character(vocab) -> tuple[str, int]:
    """(the text a detokenizer shows, the ids generated) for a prefix of SENTENCE's ids that ends
    inside a multi-byte character, as a reply cut at max_tokens does."""
    ids = vocab.tokenize(SENTENCE.encode("utf-8"), add_bos=False, special=False)
    for k in range(1, len(ids)):
        raw = vocab.detokenize(ids[:k])
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="ignore")
            if 0 < k - count(vocab, text) <= 3:
                return text, k
    raise AssertionError("no prefix of the sentence ends inside a character")


@pytest.fixture(scope="module")
def claims_gw(tmp_path_factory, rogue_upstream):
    models = [
        {
            "name": "engine",
            "engine": "upstream",
            "base_url": rogue_upstream,
            "upstream_model": "claims",
            "tokenizer": {"type": "gguf", "path": str(gguf_path())},
        }
    ]
    gw = GatewayProc(tmp_path_factory.mktemp("claims") / "data", {"models": models}).start()
    yield gw, gw.create_key(user="ivy", project="ids", department="finance")
    gw.stop()


def ask(gw, key, text: str, claimed: int, finish: str, stream: bool) -> dict:
    body = {
        "model": "engine",
        "messages": [{"role": "user", "content": "你好"}],
        "max_tokens": 64,
        "stream": stream,
        "metadata": {"text": text, "completion_tokens": str(claimed), "finish": finish},
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert r.status_code == 200, r.text
    rec = gw.record(r.headers["x-request-id"])
    assert rec["upstream_completion_tokens"] == claimed  # the engine's figure is always kept beside ours
    return rec


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_cut_inside_a_character_bills_the_engines_ids(claims_gw, vocab, stream):
    gw, key = claims_gw
    text, generated = cut_inside_a_character(vocab)
    assert count(vocab, text) < generated  # re-tokenizing the text loses the cut tail
    rec = ask(gw, key, text, generated, "length", stream)
    assert rec["completion_tokens"] == generated and rec["usage_source"] == "tokenizer"
    assert rec["total_tokens"] == rec["prompt_tokens"] + generated


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("case", ["over-claim", "under-claim", "end-of-text-on-stop"])
def test_implausible_claims_and_end_of_text_bill_our_count(claims_gw, vocab, case, stream):
    gw, key = claims_gw
    text = "天安门上太阳升。"
    ours = count(vocab, text)
    claimed, finish = {
        "over-claim": (ours + 40, "length"),
        "under-claim": (ours - 1, "length"),
        "end-of-text-on-stop": (ours + 1, "stop"),
    }[case]
    rec = ask(gw, key, text, claimed, finish, stream)
    assert rec["completion_tokens"] == ours
