"""A /v1/completions prompt is counted the way engines tokenize it: with the special ids the
tokenizer adds (a Llama-style BOS), while replies are counted without them. Built on a real
`tokenizers` tokenizer whose post-processor adds a BOS, as Llama's tokenizer.json does."""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers, processors

from tokenabacus.api.call import COMPLETIONS, Call
from tokenabacus.config import TokenizerConfig
from tokenabacus.metering.settle import Meter
from tokenabacus.metering.tokenizers import build_counter


def bos_tokenizer(tmp_path):
    vocab = {"<s>": 0, "<unk>": 1, "hello": 2, "world": 3, "again": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}"})
    )
    return tok


def test_a_completions_prompt_counts_the_bos_the_engine_adds(tmp_path):
    tok = bos_tokenizer(tmp_path)
    counter = build_counter(TokenizerConfig(type="hf", path=str(tmp_path)))
    assert counter.prompt_specials == 1
    prompt = "hello world again"
    meter = Meter(counter)
    call = Call(endpoint=COMPLETIONS, body={"model": "m", "prompt": prompt})
    # What an engine receives (`tokenizer(prompt)` in vLLM, llama.cpp's add_special) ...
    assert meter._count_prompt_sync(call) == len(tok.encode(prompt).ids) == 4
    # ... while a reply is the ids generated, with no BOS of its own.
    assert counter.count_text(prompt) == 3
