"""Content parts and tool-call round trips are counted by every tokenizer kind, never silently
billed at the upstream's claim."""

from __future__ import annotations

import pytest

from conftest import TIKTOKEN_DIR, GatewayProc, gguf_path, qwen_dir

# Model name -> its tokenizer entry, built when the fixture runs (the files are found then).
TOKENIZERS = {
    "smol-gguf": lambda: {"type": "gguf", "path": str(gguf_path())},
    "qwen-hf": lambda: {"type": "hf", "path": str(qwen_dir())},
    "gpt-4o-mini": lambda: {"type": "tiktoken", "path": str(TIKTOKEN_DIR / "o200k_base.tiktoken")},
}
UPSTREAM_CLAIM = 12  # what the rogue upstream's honest reply says the prompt cost


@pytest.fixture(scope="module")
def parts_gw(tmp_path_factory, rogue_upstream):
    """Every tokenizer kind in front of an upstream that accepts any message shape and claims 12."""
    models = [
        {"name": name, "engine": "upstream", "base_url": rogue_upstream, "upstream_model": "honest", "tokenizer": tok()}
        for name, tok in TOKENIZERS.items()
    ]
    gw = GatewayProc(tmp_path_factory.mktemp("parts") / "data", {"models": models}).start()
    yield gw, gw.create_key(user="erin", project="parts", department="qa")
    gw.stop()


TEXT = "Summarise the quarterly report in one line."
PARTS = [{"type": "text", "text": "Summarise the quarterly report"}, {"type": "text", "text": "in one line."}]
TOOL_ROUND_TRIP = [
    {"role": "user", "content": "What's the weather in Beijing?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Beijing"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
]


@pytest.mark.parametrize("model", sorted(TOKENIZERS))
def test_text_parts_are_counted_like_the_same_text(parts_gw, model):
    upstream_gw, key = parts_gw
    client = upstream_gw.client(key)
    raw = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=2, messages=[{"role": "user", "content": PARTS}]
    )
    rec = upstream_gw.record(raw.headers["x-request-id"])
    joined = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=2, messages=[{"role": "user", "content": "\n".join(p["text"] for p in PARTS)}]
    )
    ref = upstream_gw.record(joined.headers["x-request-id"])
    assert rec["usage_source"] == "tokenizer" and rec["prompt_tokens"] == ref["prompt_tokens"] > 0
    assert rec["prompt_tokens"] != UPSTREAM_CLAIM and rec["upstream_prompt_tokens"] == UPSTREAM_CLAIM
    assert raw.parse().usage.prompt_tokens == rec["prompt_tokens"]


@pytest.mark.parametrize("model", sorted(TOKENIZERS))
def test_tool_call_round_trip_is_counted(parts_gw, model):
    upstream_gw, key = parts_gw
    client = upstream_gw.client(key)
    raw = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=2, messages=TOOL_ROUND_TRIP, tools=TOOLS
    )
    rec = upstream_gw.record(raw.headers["x-request-id"])
    assert rec["usage_source"] == "tokenizer" and rec["prompt_tokens"] != UPSTREAM_CLAIM
    # The earlier turns are in the count: more than the first message alone.
    alone = client.chat.completions.with_raw_response.create(
        model=model, max_tokens=2, messages=TOOL_ROUND_TRIP[:1], tools=TOOLS
    )
    assert rec["prompt_tokens"] > upstream_gw.record(alone.headers["x-request-id"])["prompt_tokens"]
