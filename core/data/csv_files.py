"""Reading a catalogue CSV: the encoding (UTF-8, the wide Unicode encodings a spreadsheet
writes, or the one asked for), the separator, and columns named the way a person types them."""

from __future__ import annotations

import codecs
import difflib
import io
import re
from pathlib import Path

import pandas as pd

from core.common.errors import InputError, one_line
from core.data._messages import _quote_list

_UTF8_NAMES = {"utf8", "utf-8", "utf_8", "u8", "utf", "cp65001", "utf-8-sig", "utf_8_sig"}


# --------------------------------------------------------------------------- CSV


# Byte-order marks of the wide Unicode encodings (UTF-32 first: its little-endian mark starts
# with UTF-16's). Spreadsheet programs write "Unicode text" as UTF-16 with a mark.
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _wide_codec(data: bytes) -> str | None:
    """'utf-16'/'utf-32' when the file starts with that byte-order mark: a mark read as
    UTF-8 or latin-1 is an undecodable byte or garbage, so the mark wins over --encoding."""
    return next((codec for bom, codec in _WIDE_BOMS if data.startswith(bom)), None)


def _bomless_utf16(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when mostly-ASCII text lacks its mark: every other byte NUL."""
    head = data[:4096]
    if len(head) < 8 or head.count(0) < len(head) // 3:
        return None
    odd, even = head[1::2].count(0), head[0::2].count(0)
    if odd >= 0.8 * len(head[1::2]) > even:
        return "utf-16-le"
    if even >= 0.8 * len(head[0::2]) > odd:
        return "utf-16-be"
    return None


def _decode(data: bytes, encoding: str, path: Path) -> str:
    """Decode the whole file first, so an error can name the line and the byte offset
    (pandas reports positions inside its own chunks, which mean nothing to a user)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"{path.name}: unknown encoding '{encoding}'") from None
    offset = 0
    wide = _wide_codec(data)
    if wide is not None and not codec.startswith(("utf-16", "utf-32")):
        codec = wide  # the codec reads the mark and, from it, the byte order
    elif not codec.startswith(("utf-16", "utf-32")) and (guess := _bomless_utf16(data)):
        # NUL is valid UTF-8 and latin-1: without this the header would be "t\0i\0t\0l\0e\0"
        raise InputError(f"{path.name}: looks like {guess.upper()} text without a byte-order mark "
                         f"(every other byte is NUL), not {encoding}; try --encoding {guess}")
    elif codec.replace("_", "-") in ("utf-8", "utf-8-sig") or encoding.lower() in _UTF8_NAMES:
        if data.startswith(codecs.BOM_UTF8):
            offset = 3
        codec = "utf-8"
    try:
        text = data[offset:].decode(codec)
    except UnicodeDecodeError as exc:
        pos = exc.start + offset
        if codec.startswith(("utf-16", "utf-32")):
            line = data[:pos].decode(codec, errors="replace").count("\n") + 1
        else:
            line = data.count(b"\n", 0, pos) + 1
        bad = data[pos : pos + 1].hex()
        if wide is not None:
            read_as = f"{wide.upper()} (the file starts with its byte-order mark)"
        else:
            read_as = encoding + ("; try --encoding latin-1" if codec != "latin-1" else "")
        raise InputError(
            f"{path.name}: cannot decode line {line} (byte offset {pos}, byte 0x{bad}) as {read_as}"
        ) from None
    return text.removeprefix("\ufeff")  # utf-16-le/-be given for a file with its mark keep it


def read_csv(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV with every value as text ("NA" stays "NA", ids keep leading zeros) and
    column names stripped of surrounding spaces. A byte-order mark is honoured: UTF-8's is
    skipped, and a UTF-16 or UTF-32 one decodes the file as that (whatever `encoding` says).

    Raises `InputError` (one line) for a missing, empty or undecodable file, or a
    malformed CSV."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a CSV file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise InputError(f"{path.name}: file is empty (no rows)")
    text = _decode(data, encoding, path)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"{path.name}: file is empty (no rows)") from None
    except pd.errors.ParserError as exc:
        msg = one_line(exc).replace("Error tokenizing data. C error: ", "")
        m = re.search(r"\bline (\d+)", msg)
        if m:
            raise InputError(f"{path.name}: malformed CSV at line {m.group(1)}: {msg}") from None
        m = re.search(r"EOF inside string starting at row (\d+)", msg)
        if m:  # pandas counts from 0 here, header included
            line = int(m.group(1)) + 1
            raise InputError(
                f"{path.name}: malformed CSV at line {line}: a quoted field is never closed"
            ) from None
        raise InputError(f"{path.name}: malformed CSV: {msg}") from None
    frame = frame.fillna("")
    names = [str(c).strip() for c in frame.columns]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"{path.name}: column '{name}' appears twice in the header")
        seen.add(name)
    frame.columns = names
    if len(frame) == 0:
        raise InputError(f"{path.name}: no rows (only a header)")
    return frame.reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str, role: str, path: Path) -> str:
    """The frame's column for a user-given name (matched after trimming spaces)."""
    wanted = str(name).strip()
    if wanted in frame.columns:
        return wanted
    cols = list(frame.columns)
    hint = ""
    close = difflib.get_close_matches(wanted, cols, n=1, cutoff=0.6) or [
        c for c in cols if c.lower() == wanted.lower()
    ]
    if close:
        hint = f"; did you mean '{close[0]}'?"
    elif len(cols) == 1 and any(sep in cols[0] for sep in (";", "\t", "|")):
        hint = "; the file has one column only: is it separated by something other than commas?"
    raise InputError(
        f"{path.name}: no {role} column '{wanted}'; the columns are {_quote_list(cols)}{hint}"
    )


