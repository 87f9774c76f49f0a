"""What a named report answers: a titled table with notes, which the CLI prints or exports and
/admin returns, unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)
    money: frozenset[str] = frozenset()  # columns holding micros

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes}

    def shown_columns(self) -> list[str]:
        """The columns as written out: ``row`` first when some row is marked (a total)."""
        return (["row"] if any("row" in r for r in self.rows) else []) + self.columns
