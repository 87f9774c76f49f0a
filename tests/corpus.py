"""A multilingual corpus of chat requests for the exactness tests."""

from __future__ import annotations

_LONG_ZH = "在数字化转型的浪潮中，企业需要精确地统计每一次大模型调用所消耗的令牌数量，以便进行成本分摊和预算管理。"
_LONG_EN = (
    "Token accounting must be exact: every prompt is rendered with the model's chat template "
    "and counted with its own tokenizer. "
)
_CODE = '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

print({i: fib(i) for i in range(10)})  # {0: 0, 1: 1, ...}
'''

CORPUS: dict[str, list[dict]] = {
    "chinese": [{"role": "user", "content": "写一段母亲节促销文案，突出鲜花和蛋糕的优惠，语气温暖。"}],
    "english": [{"role": "user", "content": "Summarize the causes of the French Revolution in three bullet points."}],
    "japanese": [{"role": "user", "content": "日本の四季について、俳句を一つ作ってください。季語も説明してください。"}],
    "emoji": [
        {
            "role": "user",
            "content": "Rate these: 🍕🍣🌮🍜 👍👎 — and explain 🤔 why 🇨🇳🇯🇵 flags render as 2 code points! 👨‍👩‍👧‍👦",
        }
    ],
    "code": [{"role": "user", "content": "Explain this code and find the bug:\n```python\n" + _CODE + "```"}],
    "system_multi_turn": [
        {"role": "system", "content": "你是一名资深的市场营销顾问。Answer in the user's language."},
        {"role": "user", "content": "我们的新产品是一款智能水杯，请给出三个卖点。"},
        {"role": "assistant", "content": "1. 实时监测饮水量\n2. 温度提醒\n3. 与手机 App 同步"},
        {"role": "user", "content": "Now translate them into English and Japanese."},
        {
            "role": "assistant",
            "content": "1. Real-time intake tracking / リアルタイム摂取量記録\n2. Temperature alerts\n3. App sync",
        },
        {"role": "user", "content": "Great — add one with an emoji 🎉."},
    ],
    "mixed_whitespace": [
        {"role": "user", "content": "  leading spaces\n\n\ttabs\r\nCRLF  trailing   \u3000全角空格 \u200b zero-width"}
    ],
    "long_mixed": [
        {"role": "system", "content": "You are a precise analyst."},
        {"role": "user", "content": (_LONG_ZH + _LONG_EN) * 12 + "\n" + _CODE * 3},
    ],
}

# Prompts for /v1/completions (a plain string each; ms-swift wraps it in the chat template as one user message).
COMPLETION_PROMPTS: dict[str, str] = {
    "english": "The three primary colors are",
    "chinese": "母亲节快到了，请为花店写一句促销口号：",
    "emoji": "Weather today: ☀️🌧️❄️ — tomorrow: 🌈🤔 and the family 👨‍👩‍👧‍👦 goes",
    "code": "# Python\n" + _CODE + "\ndef fib_memo(n: int) -> int:\n",
    "whitespace": "  leading spaces\n\n\ttabs\r\nCRLF  trailing   \u3000全角空格 \u200b",
    "long_mixed": (_LONG_ZH + _LONG_EN) * 8 + "\n" + _CODE,
}
