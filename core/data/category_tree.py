"""Category trees: a label such as ["Home >> Bed Linen >> Bedsheets"] and its levels."""

from __future__ import annotations

_TREE_SEP = ">>"


# --------------------------------------------------------------------------- labels


def _tree_parts(value: str) -> list[str]:
    """Levels of a category tree like '["A >> B >> C"]' (brackets, quotes, spaces removed)."""
    text = str(value).strip()
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        text = text[1:-1].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        return []
    return [" ".join(part.split()) for part in text.split(_TREE_SEP)]


def parse_category_tree(value: str, level: int) -> str | None:
    """Level `level` (1 = top) of a category tree such as
    '["Home Furnishing >> Bed Linen >> Bedsheets >> ..."]', or of a plain label.

    None when the tree is shallower than `level` or that level is empty. A deepest level
    cut off with "..." (as Flipkart does) is returned as it is."""
    if level < 1:
        raise ValueError(f"category level must be 1 or more, got {level}")
    parts = _tree_parts(value)
    if len(parts) < level:
        return None
    return parts[level - 1] or None


