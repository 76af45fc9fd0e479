"""Writing a file so that a crash or a full disk never leaves half of it behind: write
next to the target, then rename (atomic on one filesystem). And the one rule for CSV
cells a spreadsheet would run as a formula (OWASP "CSV injection"), shared by every CSV
the app hands out (the export, the batch results)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

# Characters that make a spreadsheet read a cell as a formula (or a DDE call).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def atomic_write_bytes(target: Path, data: bytes, *, prefix: str = ".part-") -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def defuse_formula(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula, prefixed with a quote so it
    is shown as text; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_csv_bytes(frame: pd.DataFrame) -> bytes:
    """`frame` as UTF-8 CSV without the index, every text cell defused (numbers stay numbers)."""
    safe = frame.copy()
    for column in safe.columns:
        if pd.api.types.is_object_dtype(safe[column]) or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(defuse_formula)
    return safe.to_csv(index=False).encode("utf-8")
