"""Category trees in catalogue columns: one level of a tree path, for flat classifiers
(`--label-level N`). The path itself lives in core.common.category_path."""

from __future__ import annotations

from core.common.category_path import TREE_SEP as _TREE_SEP  # noqa: F401  (re-exported)
from core.common.category_path import path_parts as _tree_parts


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
