"""A bad report argument, worded for whoever asked: the message keeps the parameters it names
apart from its text, so the CLI says ``--until needs --since`` and /admin ``until needs since``
from the one error billing raises. ``str()`` names them neutrally: `until` needs `since`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Arg:
    """A parameter named in an error, by its Python name (``baseline_days``)."""

    name: str


class ArgumentError(ValueError):
    def __init__(self, *parts: str | Arg) -> None:
        self.parts = parts
        super().__init__(self.worded(lambda name: f"`{name}`"))

    def worded(self, name: Callable[[str], str]) -> str:
        """The message with each parameter as ``name`` spells it."""
        return "".join(name(p.name) if isinstance(p, Arg) else p for p in self.parts)


def message(e: ValueError, name: Callable[[str], str]) -> str:
    """Any ValueError's message, an ArgumentError's parameters as ``name`` spells them."""
    return e.worded(name) if isinstance(e, ArgumentError) else str(e)


def as_option(name: str) -> str:
    """A parameter as the CLI spells it: ``baseline_days`` is ``--baseline-days``."""
    return "--" + name.replace("_", "-")


def as_query(name: str) -> str:
    """A parameter as /admin spells it: its own name."""
    return name


def naming(param: str, parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``; its ValueError, whose message begins with ``param`` (as dates.check_day's
    and reports.parse_when's do when given the name), as an ArgumentError naming it."""
    try:
        return parse(text)
    except ValueError as e:
        msg = str(e)
        if not msg.startswith(param):
            raise
        raise ArgumentError(Arg(param), msg[len(param) :]) from None
