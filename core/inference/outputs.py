"""Where scored rows go: one CSV file, or a folder of parts (one per batch), written so a
failure never leaves half an output (a temporary file or folder, renamed at the end)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from core.common.errors import InputError

FORMATS = ("parquet", "csv")


class RowWriter:
    """`write(frame)` per batch in order, then `commit()`; `abort()` removes what was written."""

    def __init__(self, out: Path, part_format: str = "parquet"):
        self.out = Path(out)
        self.is_folder = self.out.suffix.lower() != ".csv"
        self.part_format = part_format
        self.rows = 0
        self.parts = 0
        self.columns: list[str] | None = None
        if self.is_folder:
            if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
                raise InputError(f"{self.out} exists and is not an empty folder: choose a new or empty folder "
                                 "(or a .csv file)")
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
            os.close(fd)
            self.tmp = Path(tmp)

    def write(self, frame: pd.DataFrame) -> None:
        if self.columns is None:
            self.columns = list(frame.columns)
        elif list(frame.columns) != self.columns:
            raise InputError("the shards do not have the same columns: "
                             f"{', '.join(self.columns[:8])} vs {', '.join(map(str, frame.columns[:8]))}")
        if self.is_folder:
            name = self.tmp / f"part-{self.parts:05d}.{self.part_format}"
            if self.part_format == "csv":
                frame.to_csv(name, index=False)
            else:
                frame.astype(str).to_parquet(name, index=False)
        else:
            with open(self.tmp, "a", newline="", encoding="utf-8") as fh:
                frame.to_csv(fh, index=False, header=self.rows == 0)
        self.rows += len(frame)
        self.parts += 1

    def commit(self) -> None:
        if self.is_folder:
            if self.out.exists():
                self.out.rmdir()  # checked empty above
            os.replace(self.tmp, self.out)
        else:
            os.replace(self.tmp, self.out)

    def abort(self) -> None:
        if self.is_folder:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)
