"""Category paths: "Home Furnishing >> Bed Linen >> Bedsheets", a product's place in a tree.

One string form everywhere (files, the store, model labels, the app): the levels from the
top, joined by PATH_SEP. A flat label is a path of one level, so flat and tree models
share every function here. Input may come wrapped as Flipkart writes it
('["A >> B >> C"]', brackets and quotes) or with ragged spacing; `normalise_path` cleans it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

TREE_SEP = ">>"
PATH_SEP = f" {TREE_SEP} "


def path_parts(value: object) -> list[str]:
    """Levels of a path like '["A >> B >> C"]' (brackets, quotes, spaces removed);
    an empty level ends the path (a level below an unknown one means nothing)."""
    text = str(value if value is not None else "").strip()
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    parts = []
    for part in text.split(TREE_SEP) if text else []:
        part = " ".join(part.split())
        if not part:
            break
        parts.append(part)
    return parts


def join_path(parts: Iterable[str]) -> str:
    return PATH_SEP.join(parts)


def normalise_path(value: object, depth: int | None = None) -> str | None:
    """The canonical path string, cut to `depth` levels; None when empty."""
    parts = path_parts(value)
    if depth is not None:
        parts = parts[:depth]
    return join_path(parts) or None


def path_from_levels(values: Sequence[object]) -> str | None:
    """A path from one value per level (several label columns), stopping at the first
    empty one: ("Apparel", "Topwear", "") -> "Apparel >> Topwear"."""
    parts = []
    for value in values:
        text = "" if value is None else " ".join(str(value).split())
        if not text or text.lower() == "nan":
            break
        parts.append(text.replace(TREE_SEP, ">"))  # a level name never splits into two levels
    return join_path(parts) or None


def path_depth(path: str) -> int:
    return len(path_parts(path))


def prefixes(path: str) -> list[str]:
    """Every ancestor path and the path itself, top first: "A >> B" -> ["A", "A >> B"]."""
    parts = path_parts(path)
    return [join_path(parts[:k]) for k in range(1, len(parts) + 1)]


def prefix(path: str, level: int) -> str | None:
    """The path cut to `level` levels; None when it is shallower."""
    parts = path_parts(path)
    return join_path(parts[:level]) if len(parts) >= level else None


def leaf_name(path: str) -> str:
    """The deepest level's name ("Bedsheets")."""
    parts = path_parts(path)
    return parts[-1] if parts else ""


def category_choices(labels: Iterable[str]) -> list[str]:
    """What a person may pick as a category: every path and every node above it (a
    reviewer who only knows the top level saves "Home Furnishing"), parents first, each
    followed by its children: a picker that filters on any part of the text then finds
    "Home Furnishing >> Bed Linen >> Bedsheets" by typing "bedsheet"."""
    nodes = {tuple(path_parts(label)[:k]) for label in labels if label
             for k in range(1, len(path_parts(label)) + 1)}
    return [join_path(parts) for parts in sorted(nodes, key=lambda parts: [p.casefold() for p in parts])]
