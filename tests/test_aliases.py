"""Model aliases (issue 20 item 16), through a real gateway in front of a real llama.cpp upstream and
the openai SDK: a request naming an alias is served, billed, priced and limited under its model's
name, the record keeps the alias the client used, /v1/models lists aliases (hidden ones stay
hidden) and a config whose names collide is refused at start in one line."""

from __future__ import annotations

import json
import subprocess

import openai
import pytest
import yaml

from conftest import BIN, GatewayProc, gguf_path
from openapi_schema import validate

SAY = [{"role": "user", "content": "Say hi"}]
MODEL, ALIASES = "smol-q", ["qwen", "qwen-latest"]
SECRET, SECRET_ALIAS = "smol-secret", "secret-alias"


@pytest.fixture(scope="module")
def gw(tmp_path_factory, llama_upstream):
    tok = {"type": "gguf", "path": str(gguf_path())}
    up = {"engine": "upstream", "base_url": llama_upstream.base_url, "upstream_model": "smol", "tokenizer": tok}
    cfg = {
        "models": [
            {"name": MODEL, "aliases": ALIASES, **up},
            {"name": SECRET, "aliases": [SECRET_ALIAS], "allow": {"projects": ["finance"]}, **up},
        ],
        "prices": [{"model": MODEL, "input": "0.8", "output": "2.4", "per": "1k", "currency": "CNY"}],
        "governance": {"quotas": [{"user": "quota.user", "model": MODEL, "requests": 2, "period": "day"}]},
    }
    g = GatewayProc(tmp_path_factory.mktemp("aliases") / "data", cfg).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def key(gw):
    return gw.create_key(user="li.lei", project="search", department="rnd")


def chat(gw: GatewayProc, key: str, model: str):
    return gw.client(key).chat.completions.with_raw_response.create(
        model=model, messages=SAY, max_tokens=4, temperature=0
    )


def test_alias_is_billed_and_priced_under_its_model(gw, key):
    canonical = gw.record(chat(gw, key, MODEL).headers["x-request-id"])
    raw = chat(gw, key, "qwen")
    body = json.loads(raw.text)
    validate(body, "CreateChatCompletionResponse")
    assert body["model"] == MODEL  # what the model's own name answers
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["status"] == "ok" and rec["model"] == MODEL and rec["model_alias"] == "qwen"
    assert canonical["model_alias"] is None
    assert rec["price_version"] == canonical["price_version"] is not None
    assert rec["cost_micros"] > 0
    units, frac = divmod(rec["cost_micros"], 1_000_000)
    assert raw.headers["x-tokenabacus-cost"] == f"{units}.{frac:06d} CNY"


def test_streamed_alias_is_recorded_with_the_alias(gw, key):
    raw = gw.client(key).chat.completions.with_raw_response.create(
        model="qwen-latest",
        messages=SAY,
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c.to_dict() for c in raw.parse()]
    for c in chunks:
        validate(c, "CreateChatCompletionStreamResponse")
    rec = gw.record(raw.headers["x-request-id"])
    assert rec["model"] == MODEL and rec["model_alias"] == "qwen-latest"
    assert chunks[-1]["usage"]["total_tokens"] == rec["total_tokens"]


def test_alias_counts_against_the_models_quota(gw):
    key = gw.create_key(user="quota.user", project="search", department="rnd")
    chat(gw, key, MODEL)
    chat(gw, key, "qwen")
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, key, "qwen-latest")
    rec = gw.record(info.value.response.headers["x-request-id"])
    assert rec["status"] == "rejected" and rec["model"] == MODEL and rec["model_alias"] == "qwen-latest"
    with pytest.raises(openai.RateLimitError):
        chat(gw, key, MODEL)


def test_models_lists_aliases_and_hides_hidden_ones(gw, key):
    client = gw.client(key)
    listed = client.models.with_raw_response.list()
    validate(json.loads(listed.text), "ListModelsResponse")
    ids = [m["id"] for m in json.loads(listed.text)["data"]]
    assert MODEL in ids and set(ALIASES) <= set(ids)
    assert SECRET not in ids and SECRET_ALIAS not in ids
    one = client.models.with_raw_response.retrieve("qwen")
    validate(json.loads(one.text), "Model")
    assert json.loads(one.text)["id"] == "qwen" and json.loads(one.text)["owned_by"] == "tokenabacus"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(SECRET_ALIAS)
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(gw, key, SECRET_ALIAS)  # access rules are the model's
    assert info.value.response.json()["error"]["code"] == "model_not_allowed"
    fin = gw.create_key(user="f", project="finance", department="money")
    assert SECRET_ALIAS in [m.id for m in gw.client(fin).models.list()]
    rec = gw.record(chat(gw, fin, SECRET_ALIAS).headers["x-request-id"])
    assert rec["model"] == SECRET and rec["model_alias"] == SECRET_ALIAS and rec["cost_micros"] is None


@pytest.mark.parametrize(
    ("models", "needle"),
    [
        ([{"name": "a", "aliases": ["b"]}, {"name": "b"}], "alias 'b' is the name of model 'b'"),
        ([{"name": "a", "aliases": ["x"]}, {"name": "b", "aliases": ["x"]}], "alias 'x' is already an alias of"),
        ([{"name": "a", "aliases": ["a"]}], "alias 'a' is the name of model 'a'"),
    ],
)
def test_colliding_names_are_refused_at_start(tmp_path, models, needle):
    entries = [{**m, "engine": "upstream", "base_url": "http://127.0.0.1:9/v1"} for m in models]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": entries}))
    r = subprocess.run(
        [str(BIN), "serve", "--config", str(path), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
