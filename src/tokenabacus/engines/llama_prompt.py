"""The embedded engine's prompt count before it runs, for admission: the ids llama-cpp-python will
evaluate, found the way it finds them (its Jinja2ChatFormatter over the GGUF's chat template, then
its tokenizer; for completions its BOS/EOS rules), so a quota reserves exactly what the prompt
takes instead of a byte-size bound. The engine's own ids are still what is billed; settle
compares the two and logs a mismatch."""

from __future__ import annotations

from typing import Any

from tokenabacus.api.call import CHAT, Call


class LlamaPromptCounter:
    def __init__(self, llm: Any) -> None:
        from llama_cpp import llama_chat_format

        self.llm = llm
        model = llm._model
        self._formatter: Any = None
        template = llm.metadata.get("tokenizer.chat_template")
        # Only when the engine renders with the GGUF's own template (no chat_format/handler override).
        if template and llm.chat_handler is None and llm.chat_format == "chat_template.default":
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )
        # create_completion's framing of a text prompt (no suffix): BOS (or CLS) and EOS (or SEP).
        cls_id, sep_id = model.token_cls(), model.token_sep()
        first = cls_id if cls_id != -1 else llm.token_bos()
        self._framing = int(model.add_bos_token() and first != -1)
        self._framing += int(not (not model.add_eos_token() and sep_id == -1))

    def count(self, call: Call, messages: list[dict] | None = None) -> int | None:
        """``messages``: the chat as the engine is given it (text parts joined)."""
        if call.endpoint == CHAT:
            if self._formatter is None or messages is None:
                return None
            body = call.body
            result = self._formatter(messages=messages, tools=body.get("tools"), tool_choice=body.get("tool_choice"))
            ids = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            return len(ids)
        prompt = call.body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return None
        return self._framing + len(self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
