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

from typing import TYPE_CHECKING

from core.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from core.catalog import Catalogue

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
        raise InputError(f"{what} is too long ({len(text):,} characters, at most {MAX_TEXT_CHARS:,}); "
                         "shorten it and try again")
    return text


def cap_catalogue_texts(catalogue: "Catalogue") -> list[int]:
    """Cut every over-long row text of `catalogue` in place and note it once in its report;
    returns the 1-based rows ever cut (kept in the report, so a second call — load_catalogue
    caps, then import or batch asks — gives the same rows and notes nothing twice)."""
    cut_rows = []
    for i, text in enumerate(catalogue.texts):
        if len(text) > MAX_TEXT_CHARS:
            catalogue.texts[i], _ = cut_text(text)
            cut_rows.append(i + 1)
    catalogue.report.cut_text_rows = sorted({*catalogue.report.cut_text_rows, *cut_rows})
    if cut_rows:
        from core.catalog import _rows_text  # the report's own way of listing rows

        catalogue.report.notes.append(f"{len(cut_rows):,} description(s) longer than {MAX_TEXT_CHARS:,} characters "
                                      f"were cut to that length (rows {_rows_text(cut_rows)})")
    return catalogue.report.cut_text_rows
