"""The most tokens a request can use, from its body alone: an upstream's claim above it is not a
count of anything the engine did, so it is not billed (the claim stays in the record beside the
bill, where the drift report and /metrics show it).

- Completion: an engine generates at most ``max_tokens`` ids per sequence, and ``n`` sequences
  (``best_of`` on the completions endpoint, when larger). Without a ``max_tokens`` in the body
  there is no bound; admission puts one there whenever a token or cost limit applies.
- Prompt, for a model with no tokenizer: its UTF-8 size as JSON plus room for the chat
  template's own tokens, as admission reserves it (a byte-level token covers at least one byte,
  and JSON only adds bytes to the text it holds). The other fields a chat template renders
  (tools, documents, template arguments) are added: an honest upstream counts them too. A prompt
  with an image or audio part has no such bound (an image's tokens do not follow its URL's size).
"""

from __future__ import annotations

import orjson

from tokenabacus.api.call import CHAT, COMPLETIONS, Call
from tokenabacus.metering.tokenizers import has_uncountable_parts

# Room for the chat template around a prompt no tokenizer counted (admission reserves the same bound).
TEMPLATE_ALLOWANCE = 256
# Body fields besides the messages that a chat template may render into the prompt.
RENDERED = ("tools", "functions", "documents", "chat_template_kwargs")


def _count(v: object) -> int:
    return v if type(v) is int and v >= 1 else 1


def completion_bound(call: Call) -> int | None:
    """The most ids the engine can generate for this request, or None when nothing bounds it."""
    most = call.max_tokens
    if type(most) is not int or most < 1:
        return None
    sequences = _count(call.body.get("n"))
    if call.endpoint == COMPLETIONS and "best_of" in call.body:
        sequences = max(sequences, _count(call.body["best_of"]))
    return most * sequences


def prompt_bound(call: Call) -> int | None:
    """The most ids the prompt can hold, judged without a tokenizer; None when its size says
    nothing (image or audio parts)."""
    if call.endpoint != CHAT:
        return len(orjson.dumps(call.body.get("prompt"))) + TEMPLATE_ALLOWANCE
    messages = call.body.get("messages")
    if not isinstance(messages, list) or has_uncountable_parts(messages):
        return None
    size = len(orjson.dumps(messages))
    for name in RENDERED:
        if call.body.get(name) is not None:
            size += len(orjson.dumps(call.body[name]))
    return size + TEMPLATE_ALLOWANCE
