"""The one length cap for every description that enters the app.

A description is bounded once, here, so no path (catalogue import, batch scoring, a
single prediction, an explanation) hands the model or SHAP an unbounded string: a
20k-word paste must cost one bounded prediction, never minutes of another user's time.

Where a person typed the text (Predict) it is refused with a clear message; where it
comes from a file (import, batch) the row is cut to the cap and the report says so (one
over-long row must not sink a whole file); an explanation explains the cut text and says
so. Light module: no TensorFlow, no pandas at import.
"""

from __future__ import annotations


def collapse_whitespace(text: object) -> str:
    """Every run of whitespace (newlines, tabs) as one space, no leading or trailing space."""
    return " ".join(str(text).split())


def identity_key(text: object) -> str:
    """The text as it identifies a product: case-folded and whitespace-collapsed, so
    "Steel  Mug" and "steel mug" are one text (duplicates, dedup groups, content keys)."""
    return collapse_whitespace(text).casefold()


MAX_TEXT_CHARS = 20_000
_WORD_BACKTRACK = 200  # cut at the last space within this many characters of the cap


def cut_text(text: str, limit: int = MAX_TEXT_CHARS) -> tuple[str, bool]:
    """(`text` cut to at most `limit` characters, whether it was cut). The cut falls on a
    space when one is close, so the last word is not half a word."""
    if len(text) <= limit:
        return text, False
    head = text[:limit]
    if not text[limit].isspace():
        space = head.rfind(" ", limit - _WORD_BACKTRACK)
        if space > 0:
            head = head[:space]
    return head.rstrip(), True


def refuse_long_text(text: str, what: str = "the description") -> str:
    """`text` unchanged, or InputError when it is over the cap (for text a person typed)."""
    if len(text) > MAX_TEXT_CHARS:
        from core.common.errors import InputError  # errors builds on this module (one_line)

        raise InputError(f"{what} is too long ({len(text):,} characters, at most {MAX_TEXT_CHARS:,}); "
                         "shorten it and try again")
    return text
