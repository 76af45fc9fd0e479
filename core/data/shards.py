"""Catalogues too big for one file: `--data` names a CSV or Parquet file, a folder of them,
or a glob; each file is a shard, read with every value as text (as `read_csv` reads a CSV),
so a Parquet shard and its CSV twin give the same rows."""

from __future__ import annotations

import glob
from pathlib import Path

import pandas as pd

from core.common.errors import InputError, one_line
from core.data.csv_files import read_csv

SUFFIXES = (".csv", ".parquet", ".pq")


def list_shards(data: str | Path) -> list[Path]:
    """The shard files of `data`, sorted by name (their rows come out in this order)."""
    text = str(data)
    if any(c in text for c in "*?["):
        found = [Path(p) for p in sorted(glob.glob(text)) if Path(p).suffix.lower() in SUFFIXES]
        if not found:
            raise InputError(f"no CSV or Parquet file matches {text}")
        return found
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                       and not p.name.startswith("."))
        if not found:
            raise InputError(f"{path}: no .csv or .parquet file in this folder")
        return found
    if not path.exists():
        raise InputError(f"file not found: {path}")
    return [path]


def read_shard(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """One shard's rows, every value text ("" for missing), column names stripped."""
    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".pq"):
        return read_csv(path, encoding=encoding)
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path.name}: not a readable Parquet file ({one_line(exc)})") from None
    if len(frame) == 0:
        raise InputError(f"{path.name}: no rows")
    frame.columns = [str(c).strip() for c in frame.columns]
    out = frame.astype(object).where(frame.notna(), "")
    return out.map(lambda v: v if isinstance(v, str) else str(v)).astype(str).reset_index(drop=True)
