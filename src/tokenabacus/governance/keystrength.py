"""Is an operator's chosen admin key strong enough to face the network?

Keys the gateway generates carry 256 random bits. The bootstrap admin key may be chosen by hand
(``TOKENABACUS_ADMIN_KEY``), and a guessable one opens everything, so it is refused unless it is
long and looks random: at least ``MIN_LENGTH`` characters, enough different characters, and not a
repeated or running pattern. These are cheap heuristics, not a proof of randomness: they catch the
keys people type (``admin``, ``passwordpassword...``, ``abcdef...``, ``1234...``).
"""

from __future__ import annotations

ADMIN_KEY_ENV = "TOKENABACUS_ADMIN_KEY"
MIN_LENGTH = 32
MIN_DISTINCT = 8  # 32 random hex digits show fewer than 8 different ones about once in 3 x 10^7 keys
MAX_REPEATED_TRIGRAMS = 0.25  # share of 3-character pieces seen before: a repeated phrase
MAX_RUNNING_STEPS = 0.5  # share of neighbours one code point apart or equal: abcd..., 1234..., aaaa...
HOW_TO_MAKE = "python -c \"import secrets; print('sk-admin-' + secrets.token_hex(24))\""


def weakness(key: str) -> str | None:
    """Why ``key`` is too weak to be an admin key, or None when it will do."""
    if len(key) < MIN_LENGTH:
        return f"it has {len(key)} characters; at least {MIN_LENGTH} are needed"
    if len(set(key)) < MIN_DISTINCT:
        return f"it uses only {len(set(key))} different characters"
    trigrams = [key[i : i + 3] for i in range(len(key) - 2)]
    if 1 - len(set(trigrams)) / len(trigrams) > MAX_REPEATED_TRIGRAMS:
        return "it repeats a pattern"
    steps = sum(1 for a, b in zip(key, key[1:], strict=False) if abs(ord(a) - ord(b)) <= 1)
    if steps / (len(key) - 1) > MAX_RUNNING_STEPS:
        return "it is a run of neighbouring characters"
    return None


class WeakAdminKey(ValueError):
    """The admin key an operator chose is guessable."""


def check_admin_key(key: str) -> None:
    """WeakAdminKey, worded for the operator (one line), unless the chosen admin key will do."""
    why = weakness(key)
    if why is not None:
        raise WeakAdminKey(f"{ADMIN_KEY_ENV} is too weak: {why}; make a strong one with: {HOW_TO_MAKE}")
