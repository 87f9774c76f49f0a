"""A faster exact counter for byte-level BPE tokenizer.json files (Qwen, Llama 3 and kin).

HuggingFace ``tokenizers`` builds a full Encoding (offsets, alignments, token strings) for every
call, which costs 20 µs or more even for a short chat turn. For counting we only need the number
of ids, and tiktoken's Rust BPE computes the same ids several times faster when the
tokenizer.json is a plain byte-level BPE:

    added tokens split out of the raw text  ->  NFC (or no) normalizer
    ->  one regex split (``Isolated``) + byte-level mapping  ->  BPE, merges in vocabulary order

For such a file, merge-list BPE and tiktoken's rank BPE pick the same merge at every step (the
merge that builds token id N is the N-th merge). That is checked on the file, not assumed:
``FastBPE.from_tokenizer_json`` refuses any other pipeline shape, and ``verify`` compares both
tokenizers on a probe corpus and checks that every vocabulary entry is reached by its own merges.
Anything that fails falls back to HuggingFace ``tokenizers`` (see ``HFCounter``).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any


class Unsupported(Exception):
    """The tokenizer.json is not a shape this counter reproduces exactly."""


def _byte_decoder() -> dict[str, int]:
    # GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 onwards.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _merge_pair(m: Any) -> tuple[str, str]:
    if isinstance(m, list) and len(m) == 2:
        return m[0], m[1]
    if isinstance(m, str) and m.count(" ") == 1:
        a, b = m.split(" ")
        return a, b
    raise Unsupported(f"unreadable merge {m!r}")


def _require(ok: bool, why: str) -> None:
    if not ok:
        raise Unsupported(why)


class FastBPE:
    def __init__(self, pattern: str, ranks: dict[bytes, int], added: list[str], nfc: bool) -> None:
        import tiktoken

        self._encode = tiktoken.Encoding(
            "tokenabacus-bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens={}
        ).encode_ordinary
        # Longest first, so the alternation matches leftmost-longest like tokenizers' trie.
        alternation = "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))
        self._split = re.compile(f"({alternation})").split if added else None
        self._added = set(added)
        self._nfc = nfc

    @classmethod
    def from_tokenizer_json(cls, spec: dict) -> FastBPE:
        model = spec.get("model") or {}
        _require(model.get("type") == "BPE", "model is not BPE")
        _require(model.get("dropout") in (None, 0, 0.0), "BPE dropout is set")
        _require(not model.get("byte_fallback"), "byte_fallback BPE")
        _require(model.get("unk_token") is None, "BPE with an unk_token")
        _require(
            not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"),
            "subword prefix or suffix",
        )

        norm = spec.get("normalizer")
        _require(norm is None or norm == {"type": "NFC"}, f"normalizer {norm and norm.get('type')}")

        pre = spec.get("pre_tokenizer") or {}
        steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
        _require(len(steps) == 2, "pre-tokenizer is not one regex split plus byte-level")
        split, byte_level = steps
        _require(
            split.get("type") == "Split"
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and isinstance((split.get("pattern") or {}).get("Regex"), str),
            "first pre-tokenizer is not an isolating regex split",
        )
        _require(
            byte_level.get("type") == "ByteLevel"
            and not byte_level.get("add_prefix_space")
            and not byte_level.get("use_regex", True),
            "second pre-tokenizer is not a plain byte-level mapping",
        )

        added = []
        for t in spec.get("added_tokens") or []:
            _require(
                not (t.get("lstrip") or t.get("rstrip") or t.get("single_word") or t.get("normalized")),
                f"added token {t.get('content')!r} strips, matches whole words or is normalized",
            )
            added.append(t["content"])
        skip = set(added)

        decode = _byte_decoder()
        vocab: dict[str, int] = model.get("vocab") or {}
        _require(len(set(vocab.values())) == len(vocab), "vocabulary ids are not unique")
        ranks: dict[bytes, int] = {}
        try:
            for token, rank in vocab.items():
                if token not in skip:  # split out before BPE ever sees the text
                    ranks[bytes(decode[ch] for ch in token)] = rank
        except KeyError:
            raise Unsupported("vocabulary has characters outside the byte-level alphabet") from None
        _require(sum(1 for b in ranks if len(b) == 1) == 256, "vocabulary lacks some single bytes")

        # Merge i must build a token ranked after every earlier merge's token: then "lowest merge
        # first" and tiktoken's "lowest resulting rank first" are the same rule. Every multi-byte
        # token must have a merge, or tiktoken could build tokens BPE never would.
        last, built = -1, set()
        for m in model.get("merges") or []:
            a, b = _merge_pair(m)
            merged = vocab.get(a + b)
            if merged is None or merged <= last:
                raise Unsupported("merges are not in vocabulary order")
            last = merged
            built.add(a + b)
        _require(all(t in built for t in vocab if len(t) > 1 and t not in skip), "some multi-byte tokens have no merge")
        return cls(split["pattern"]["Regex"], ranks, added, norm is not None)

    def count(self, text: str) -> int:
        if self._split is None:
            return self._count_plain(text)
        parts = self._split(text)  # [text, added, text, added, ..., text]
        n = len(parts) // 2
        for part in parts[::2]:
            if part:
                n += self._count_plain(part)
        return n

    def _count_plain(self, text: str) -> int:
        if self._nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        return len(self._encode(text))

    def verify(self, tokenizer: Any, spec: dict) -> str | None:
        """Compare with the HuggingFace tokenizer; the first disagreement, or None."""
        for text in _probes(spec):
            want = len(tokenizer.encode(text, add_special_tokens=False).ids)
            got = self.count(text)
            if got != want:
                return f"probe {text[:40]!r}: {got} tokens here, {want} by tokenizers"
        # tiktoken takes a whole pre-token that is itself a token as that token; BPE must agree.
        model = tokenizer.model
        if not spec["model"].get("ignore_merges"):
            for token in spec["model"]["vocab"]:
                if len(token) > 1 and token not in self._added:
                    pieces = model.tokenize(token)
                    if len(pieces) != 1:
                        return f"token {token!r} is not reached by its own merges"
        return None


_PROBES = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n\n",
    " \n ",
    "\t\t x",
    "a  b   c    ",
    "trailing   ",
    "Hello, world! It's 2026; they'll say we've done it. DON'T SHOUT",
    "I'M HERE, it'S ok'd",
    "1234567890 3.14159 -42 1e10 0x1F",
    "写一段母亲节促销文案，突出鲜花和蛋糕的优惠。",
    "今日は良い天気ですね。カタカナとひらがな。",
    "한국어 문장입니다",
    "한국어",
    "e\u0301te\u0301 cafe\u0301 Å",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
    "👩‍👩‍👧‍👦 🎉🎉 🇨🇳 👍🏽",
    "def f(x):\n    return x ** 2  # square\n\n\tprint(f(3))\r\n",
    '{"a": [1, 2, {"b": null}]}',
    "<html><body>&nbsp;</body></html>",
    "~!@#$%^&*()_+`-=[]\\{}|;':\",./<>?",
    "Ω≈ç√∫˜µ≤≥÷ ¡™£¢∞§¶•ªº–≠",
    "\u200b\u200d\ufeff zero width",
    "Ⅻ ½ ²³ ﬁ",
    "mixed中文English日本語123abc！？。",
    "x" * 300,
    "ab" * 150 + " " * 40 + "\n" * 5,
]


def _probes(spec: dict) -> list[str]:
    added = [t["content"] for t in spec.get("added_tokens") or []][:8]
    around = [f"{t}user\n你好{t}\n" for t in added] + [f"a{t}b {t}{t} \u0301{t}\u0338" for t in added]
    return _PROBES + around
