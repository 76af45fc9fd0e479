"""How the data floor lists things in its messages (values, rows, counts)."""

from __future__ import annotations

from typing import Sequence


def _quote_list(values: Sequence[str], limit: int = 30) -> str:
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    if len(values) > limit:
        shown += f", … ({len(values) - limit} more)"
    return shown


def _rows_text(rows: Sequence[int], limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    if len(rows) > limit:
        shown += f", … {len(rows) - limit} more"
    return shown


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


