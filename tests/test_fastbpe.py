"""The fast BPE counter gives the same counts as HuggingFace tokenizers on the real Qwen
tokenizer.json, and anything it cannot reproduce exactly falls back to tokenizers."""

from __future__ import annotations

import json
import random
import shutil
import unicodedata

import pytest
from tokenizers import Tokenizer

from conftest import qwen_dir
from corpus import CORPUS
from tokenabacus.config import TokenizerConfig
from tokenabacus.metering.fastbpe import FastBPE, Unsupported
from tokenabacus.metering.tokenizers import HFCounter


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads((qwen_dir() / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def hf() -> Tokenizer:
    return Tokenizer.from_file(str(qwen_dir() / "tokenizer.json"))


@pytest.fixture(scope="module")
def fast(spec) -> FastBPE:
    return FastBPE.from_tokenizer_json(spec)


def reference(hf: Tokenizer, texts: list[str]) -> list[int]:
    return [len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)]


def test_qwen_file_qualifies_and_passes_its_self_check(fast, hf, spec):
    assert fast.verify(hf, spec) is None


def test_rendered_corpus_counts_equal(fast, hf):
    counter = HFCounter(TokenizerConfig(type="hf", path=str(qwen_dir()), fast_bpe=False))
    texts = [counter.render(m) for m in CORPUS.values()]
    assert [fast.count(t) for t in texts] == reference(hf, texts)


def test_random_text_counts_equal(fast, hf, spec):
    """Random runs of vocabulary pieces, added tokens, whitespace, digits and decomposed
    (non-NFC) text: the places where pre-tokenization, normalization and merges could differ."""
    rng = random.Random(20261128)
    vocab = [t for t in spec["model"]["vocab"]]
    decode = {v: k for k, v in _byte_table().items()}
    pieces = [bytes(decode[c] for c in t).decode("utf-8", "ignore") for t in rng.sample(vocab, 40000)]
    pieces = [p for p in pieces if p]
    added = [t["content"] for t in spec["added_tokens"]]
    extra = [
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "'s",
        "'LL",
        "123",
        "4567",
        "e\u0301",
        "\u1100\u1161\u11a8",
        "A\u030a",
        "\u0338",
        ">",
        "<",
        "|",
        "🇨🇳",
        "👩‍💻",
        "\u200d",
    ]
    texts = []
    for _ in range(20000):
        parts = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            parts.append(rng.choice(added) if r < 0.05 else rng.choice(extra) if r < 0.3 else rng.choice(pieces))
        text = "".join(parts)
        texts.append(unicodedata.normalize("NFD", text) if rng.random() < 0.1 else text)
    got = [fast.count(t) for t in texts]
    want = reference(hf, texts)
    diffs = [(t, g, w) for t, g, w in zip(texts, got, want, strict=True) if g != w]
    assert not diffs, diffs[:5]


def test_every_bmp_code_point_counts_equal(fast, hf):
    """Regex classes (letters, numbers, spaces, case folding) in two regex engines and NFC data in
    two Unicode databases: every BMP code point and every 13th astral one, in three contexts."""
    cps = [c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF] + list(range(0x10000, 0x110000, 13))
    for context in ("x{c}1 {c}{c}\n", "'{c} 中{c}文", "{c}'S  9{c}"):
        texts = [context.format(c=chr(c)) for c in cps]
        got = [fast.count(t) for t in texts]
        want = reference(hf, texts)
        diffs = [hex(c) for c, g, w in zip(cps, got, want, strict=True) if g != w]
        assert not diffs, (context, diffs[:20])


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda s: s.update(normalizer={"type": "NFKC"}), "normalizer"),
        (lambda s: s["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda s: s["model"].update(dropout=0.1), "dropout"),
        (
            lambda s: s.update(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}),
            "pre-tokenizer",
        ),
        (lambda s: s["model"]["merges"].reverse(), "merges are not in vocabulary order"),
        (lambda s: s["model"]["merges"].pop(), "no merge"),
        (lambda s: s["added_tokens"][0].update(lstrip=True), "added token"),
    ],
)
def test_other_pipelines_are_refused(spec, change, why):
    altered = json.loads(json.dumps(spec))
    change(altered)
    with pytest.raises(Unsupported, match=why):
        FastBPE.from_tokenizer_json(altered)


def test_self_check_catches_a_disagreeing_file(spec, hf):
    """A counter built from a different pattern than the tokenizer it is checked against is caught."""
    altered = json.loads(json.dumps(spec))
    altered["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\S+|\s+"
    assert "tokens here" in FastBPE.from_tokenizer_json(altered).verify(hf, spec)


def test_counter_falls_back_to_tokenizers(tmp_path, spec, caplog):
    folder = tmp_path / "qwen-nfkc"
    shutil.copytree(qwen_dir(), folder)
    altered = json.loads(json.dumps(spec))
    altered["normalizer"] = {"type": "NFKC"}
    (folder / "tokenizer.json").write_text(json.dumps(altered), encoding="utf-8")
    with caplog.at_level("INFO", logger="tokenabacus.metering.tokenizers"):
        counter = HFCounter(TokenizerConfig(type="hf", path=str(folder)))
    assert counter.engine == "tokenizers"
    assert "fast BPE does not apply: normalizer NFKC" in caplog.text
    text = "Ｆｕｌｌｗｉｄｔｈ ﬁ ½"  # NFKC changes these, so the count is tokenizers' own
    assert counter.count_text(text) == len(
        Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    )

    assert HFCounter(TokenizerConfig(type="hf", path=str(qwen_dir()))).engine == "tiktoken"
    assert HFCounter(TokenizerConfig(type="hf", path=str(qwen_dir()), fast_bpe=False)).engine == "tokenizers"


def _byte_table() -> dict[int, str]:
    # GPT-2's byte-to-character table, written out independently of the code under test.
    bs = [*range(33, 127), *range(161, 173), *range(174, 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))
