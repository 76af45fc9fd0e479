"""Importing a catalogue CSV, mapped by flags (which columns are text, label, image).

Used by the CLI (`python -m core train|predict|evaluate`) and by the app. The import is
forgiving about rows and strict about the file: a missing or broken image never fails
the import (the row keeps its text and the problem goes into the `ImportReport`), but
an unreadable file, a missing column or an impossible label level is an `InputError`
with a one-line message naming the file, row and column.

Row numbers everywhere are 1-based data rows: "row 1" is the first row after the header.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from core.common.errors import InputError, one_line
from core.common.images import ImageDecodeError, open_image
from core.common.text import MAX_TEXT_CHARS, cut_text, identity_key
from core.data._messages import _plural, _quote_list, _rows_text
from core.common.category_path import normalise_path, path_from_levels
from core.data.category_tree import _TREE_SEP, _tree_parts, parse_category_tree
from core.data.csv_files import _column, read_csv
from core.data.downloads import DownloadError, download_url

# --------------------------------------------------------------------------- helpers


def join_text(parts: Iterable[str]) -> str:
    """Join text fields into the model's input text: ". " between non-empty parts,
    whitespace collapsed. A part that already ends in punctuation gets just a space,
    so "Title." + "Desc" gives "Title. Desc", not "Title.. Desc". The app must build
    single-product text with this same function."""
    out = ""
    for part in parts:
        part = " ".join(str(part).split())
        if not part:
            continue
        if not out:
            out = part
        elif out[-1] in ".!?;:":
            out = f"{out} {part}"
        else:
            out = f"{out}. {part}"
    return out


# --------------------------------------------------------------------------- report


@dataclass
class ImportReport:
    """What the import found, for the CLI (JSON) and for humans (`summary_lines`).

    All row numbers are 1-based data rows."""

    source: str = ""
    rows: int = 0
    labelled: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    #: one dict per row whose image could not be used: {row, column, value, reason}
    missing_images: list[dict[str, Any]] = field(default_factory=list)
    empty_texts: int = 0
    empty_text_rows: list[int] = field(default_factory=list)
    #: rows whose normalized text repeats an earlier row's (empty texts not counted)
    duplicate_texts: int = 0
    #: rows with neither text nor a usable image: kept but flagged `usable=False`
    unusable_rows: list[int] = field(default_factory=list)
    #: rows with no label although a label column was given (empty, or tree too shallow)
    unlabelled_rows: list[int] = field(default_factory=list)
    #: rows whose image cell is empty (no image given; not counted as missing)
    no_image_rows: list[int] = field(default_factory=list)
    text_columns: list[str] = field(default_factory=list)
    label_column: str | None = None
    label_level: int | None = None
    label_depth: int | None = None
    image_column: str | None = None
    notes: list[str] = field(default_factory=list)
    cut_text_rows: list[int] = field(default_factory=list)  # rows whose text was cut to core.common.text.MAX_TEXT_CHARS

    @property
    def classes(self) -> list[str]:
        return sorted(self.per_class)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["classes"] = self.classes
        return out

    def summary_lines(self) -> list[str]:
        """A few short lines for the terminal or the app."""
        head = f"{Path(self.source).name or 'catalogue'}: {_plural(self.rows, 'row')}"
        if self.label_column is not None:
            head += f", {self.labelled} labelled, {_plural(len(self.per_class), 'class', 'classes')}"
            if self.per_class:
                lo, hi = min(self.per_class.values()), max(self.per_class.values())
                head += f" ({lo} rows each)" if lo == hi else f" ({lo}–{hi} rows per class)"
        lines = [head]
        problems = []
        if self.image_column is not None:
            n = len(self.missing_images)
            part = f"{_plural(n, 'image')} missing"
            if n:
                part += f" (rows {_rows_text([m['row'] for m in self.missing_images])})"
            problems.append(part)
        part = _plural(self.empty_texts, "empty text")
        if self.empty_texts:
            part += f" (rows {_rows_text(self.empty_text_rows)})"
        problems.append(part)
        problems.append(_plural(self.duplicate_texts, "duplicate text"))
        lines.append("; ".join(problems))
        if self.unlabelled_rows:
            lines.append(
                f"{_plural(len(self.unlabelled_rows), 'row')} without a label "
                f"(rows {_rows_text(self.unlabelled_rows)})"
            )
        if self.unusable_rows:
            lines.append(
                f"{_plural(len(self.unusable_rows), 'row')} with neither text nor image, "
                f"skipped (rows {_rows_text(self.unusable_rows)})"
            )
        for m in self.missing_images[:3]:
            lines.append(f"  row {m['row']}, column '{m['column']}': {m['reason']}")
        lines.extend(self.notes)
        return lines


# --------------------------------------------------------------------------- catalogue


@dataclass
class Catalogue:
    """One imported CSV: the original frame plus the model-ready columns, row-aligned.

    Row i of every list is CSV data row i + 1. Rows are never dropped: callers skip
    `usable[i] == False` (no text, no image) and `labels[i] is None` where they must,
    and say so (the report has the row numbers)."""

    source: Path
    frame: pd.DataFrame
    texts: list[str]
    labels: list[str | None]
    image_paths: list[Path | None]
    usable: list[bool]
    report: ImportReport
    text_cols: list[str] = field(default_factory=list)
    label_col: str | None = None
    label_level: int | None = None
    image_col: str | None = None
    label_depth: int | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels (None excluded)."""
        return sorted({label for label in self.labels if label is not None})

    def labelled_mask(self) -> np.ndarray:
        """Boolean mask of rows that have a label."""
        return np.array([label is not None for label in self.labels], dtype=bool)

    def trainable_mask(self) -> np.ndarray:
        """Rows training can use: labelled and usable (text or image)."""
        return self.labelled_mask() & self.usable_mask()

    def usable_mask(self) -> np.ndarray:
        """Boolean mask of rows with text or a usable image (what prediction uses)."""
        return np.array(self.usable, dtype=bool)

    def subset(self, rows: Sequence[int]) -> "Catalogue":
        """The same catalogue restricted to `rows` (in that order), for splits and
        cross-validation; the import report still describes the whole file."""
        rows = [int(i) for i in rows]
        return replace(
            self,
            frame=self.frame.iloc[rows].reset_index(drop=True),
            texts=[self.texts[i] for i in rows],
            labels=[self.labels[i] for i in rows],
            image_paths=[self.image_paths[i] for i in rows],
            usable=[self.usable[i] for i in rows],
        )


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm  # only when asked: keeps plain imports fast

    return tqdm(iterable, total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


def _verify_image(path: Path) -> str | None:
    """None if the image decodes, else the reason."""
    try:
        open_image(path, what=str(path))
    except ImageDecodeError as exc:
        return exc.reason
    except InputError as exc:  # pragma: no cover - open_image only raises ImageDecodeError
        return one_line(exc)
    return None


def _download_all(urls: list[str], progress: bool) -> dict[str, Path | str]:
    """Each distinct URL downloaded once (threads: it is network-bound): its file, or why not."""
    def fetch(url: str) -> tuple[str, Path | str]:
        try:
            return url, download_url(url)
        except DownloadError as exc:
            return url, exc.reason

    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(urls))) as pool:
        return dict(_progress(pool.map(fetch, urls), len(urls), "downloading images", progress))


def _local_image(value: str, base_dir: Path, confine_images: bool) -> Path | str:
    """The file a (non-URL) image value names, or why it cannot be used. Confined (an
    untrusted upload): no absolute path, nothing outside the image folder."""
    m = _SCHEME.match(value)
    if m and len(m.group(1)) > 1:  # "C://..." is a Windows drive, not a scheme
        return f"unsupported URL scheme '{m.group(1)}'"
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = base_dir / candidate
    elif confine_images:
        return "absolute image paths are not allowed here"
    try:  # a long description given as an image name raises (ENAMETOOLONG) instead of False
        if confine_images:
            try:
                candidate.resolve().relative_to(base_dir.resolve())
            except ValueError:
                return "image path points outside the image folder"
        if not candidate.is_file():
            return f"is a folder, not an image file: {candidate}" if candidate.is_dir() else f"file not found: {candidate}"
    except OSError as exc:
        return f"not a usable file name ({exc.strerror or 'unreadable'}): {value[:60]}…"
    return candidate


def _verify_all(paths: list[Path | None], progress: bool) -> dict[Path, str | None]:
    """Decode each distinct file once to prove it is a usable image: {path: problem or None}."""
    distinct = sorted({p for p in paths if p is not None}, key=str)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        return dict(zip(distinct, _progress(pool.map(_verify_image, distinct), len(distinct), "checking images",
                                            progress)))


def _resolve_images(values: list[str], *, column: str, base_dir: Path, check_images: bool, progress: bool,
                    confine_images: bool) -> tuple[list[Path | None], list[dict[str, Any]], list[int]]:
    """Image path per row (None = no usable image), the problems, and rows with no value."""
    paths: list[Path | None] = [None] * len(values)
    problems: dict[int, str] = {}
    no_image = [i + 1 for i, value in enumerate(values) if not value]
    fetched = _download_all(sorted({v for v in values if v.lower().startswith(("http://", "https://"))}), progress)
    for i, value in enumerate(values):
        if value:
            found = fetched[value] if value in fetched else _local_image(value, base_dir, confine_images)
            if isinstance(found, str):
                problems[i] = found
            else:
                paths[i] = found
    if check_images:
        reasons = _verify_all(paths, progress)
        for i, p in enumerate(paths):
            if p is not None and reasons.get(p):
                problems[i], paths[i] = reasons[p], None
    missing = [{"row": i + 1, "column": column, "value": values[i], "reason": reason}
               for i, reason in sorted(problems.items())]
    return paths, missing, no_image


def _check_mapping(source: Path, text_cols: list[str], label_col: str | None, label_level: int | None,
                   image_col: str | None, require_labels: bool, label_depth: int | None = None) -> None:
    """The flags make sense together (before the file is read)."""
    if not text_cols and not image_col:
        raise InputError(f"{source.name}: give at least one text column or an image column")
    if label_level is not None and label_col is None:
        raise InputError("--label-level needs a label column")
    if label_level is not None and int(label_level) < 1:
        raise InputError(f"--label-level must be 1 or more, got {label_level}")
    if label_depth is not None and int(label_depth) < 1:
        raise InputError(f"--label-depth must be 1 or more, got {label_depth}")
    if label_depth is not None and label_level is not None:
        raise InputError("give --label-level N (one level, flat) or --label-depth N (the tree down to N), not both")
    if require_labels and label_col is None:
        raise InputError(f"{source.name}: training needs a label column")


def _read_texts(frame: pd.DataFrame, text_names: list[str]) -> tuple[list[str], list[int], int]:
    """Each row's text (the text columns joined), the rows with none, and how many repeat an earlier text."""
    texts = [join_text(row) for row in frame[text_names].to_numpy(dtype=object)] if text_names else [""] * len(frame)
    seen: set[str] = set()
    duplicates = 0
    for key in (identity_key(t) for t in texts):
        if key:
            duplicates += key in seen
            seen.add(key)
    return texts, [i + 1 for i, t in enumerate(texts) if not t], duplicates


def _label_columns(frame: pd.DataFrame, label_col: str, source: Path) -> list[str]:
    """One label column, or several comma-separated ones (one per tree level, top first)."""
    if str(label_col).strip() in frame.columns or "," not in str(label_col):
        return [_column(frame, label_col, "label", source)]
    return [_column(frame, part, "label", source) for part in str(label_col).split(",") if part.strip()]


def _read_labels(frame: pd.DataFrame, label_names: list[str], label_level: int | None, label_depth: int | None,
                 name: str, notes: list[str]) -> list[str | None]:
    """Each row's label: a category path ("A >> B >> C", from one tree column or one column
    per level, cut to `label_depth`), one level of it (`label_level`: a flat label), or
    the whole value when the column holds plain class names."""
    if len(label_names) > 1:
        columns = [frame[c].tolist() for c in label_names]
        levels = [[None if pd.isna(v) else v for v in values] for values in zip(*columns)]
        if label_level is not None:
            if label_level > len(label_names):
                raise InputError(f"{name}: --label-level {label_level} but only {len(label_names)} label columns "
                                 f"were given ({', '.join(label_names)})")
            return [parse_category_tree(path_from_levels(v) or "", label_level) for v in levels]
        return [normalise_path(path_from_levels(v), label_depth) for v in levels]
    label_name = label_names[0]
    raw = ["" if pd.isna(v) else str(v) for v in frame[label_name].tolist()]
    if label_level is None:
        labels = [(" ".join(v.split()) or None) for v in raw]
        trees = sum(1 for v in labels if v and _TREE_SEP in v)
        if not (trees and trees >= 0.5 * sum(1 for v in labels if v)):
            return labels
        paths = [normalise_path(v, label_depth) for v in raw]
        depth = max((len(_tree_parts(p)) for p in paths if p), default=0)
        notes.append(f"labels in column '{label_name}' are category paths: learning the tree to level {depth}"
                     + ("" if label_depth else " (--label-depth N stops higher, --label-level N learns one level)"))
        return paths
    level = int(label_level)
    depths = [len(_tree_parts(v)) for v in raw if v.strip()]
    if not depths:
        raise InputError(f"{name}: column '{label_name}' has no labels (every value is empty)")
    if level > max(depths):
        raise InputError(f"{name}: --label-level {level} but the deepest category tree in column "
                         f"'{label_name}' has {_plural(max(depths), 'level')}")
    return [parse_category_tree(v, level) for v in raw]


def _count_classes(labels: list[str | None], label_name: str | None, name: str, require_labels: bool,
                   notes: list[str]) -> dict[str, int]:
    """Rows per class, largest first; training needs two classes (and is told about singletons)."""
    counts: dict[str, int] = {}
    for label in labels:
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    per_class = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    if require_labels:
        if not per_class:
            raise InputError(f"{name}: column '{label_name}' has no labels: training needs at least two classes")
        if len(per_class) < 2:
            raise InputError(f"{name}: only one class '{next(iter(per_class))}' in column '{label_name}': "
                             "training needs at least two")
        tiny = [c for c, k in per_class.items() if k < 2]
        if tiny:
            notes.append(f"{_plural(len(tiny), 'class', 'classes')} with a single row: {_quote_list(tiny, 5)}")
    return per_class


def _read_images(frame: pd.DataFrame, image_name: str, base_dir: Path, *, check_images: bool, progress: bool,
                 confine_images: bool, notes: list[str]) -> tuple[list[Path | None], list[dict[str, Any]], list[int]]:
    """Each row's photo (see _resolve_images), with a note when no local photo at all was found."""
    values = [str(v).strip() for v in frame[image_name].tolist()]
    image_paths, missing, no_image_rows = _resolve_images(values, column=image_name, base_dir=base_dir,
                                                          check_images=check_images, progress=progress,
                                                          confine_images=confine_images)
    local = [i for i, v in enumerate(values) if v and not v.lower().startswith(("http://", "https://"))]
    if len(local) > 1 and all(image_paths[i] is None for i in local):
        notes.append(f"none of the {len(local)} local images in column '{image_name}' could be used "
                     f"(looked under {base_dir}): is the image folder right?")
    return image_paths, missing, no_image_rows


def image_column(frame: pd.DataFrame, source: Path, image_col: str, image_dir: str | Path | None = None, *,
                 progress: bool = False) -> tuple[list[Path | None], list[dict[str, Any]]]:
    """Each row's usable photo (None where there is none) and the rows whose photo could not
    be used ({row, column, value, reason}), resolved as `load_catalogue` does (URLs fetched
    under the download rules): for work on photos alone (`python -m core embed`)."""
    name = _column(frame.reset_index(drop=True), image_col, "image", source)
    base_dir = Path(image_dir).expanduser() if image_dir is not None else source.parent
    if image_dir is not None and not base_dir.is_dir():
        raise InputError(f"image folder not found: {base_dir}")
    paths, missing, _ = _read_images(frame.reset_index(drop=True), name, base_dir, check_images=True,
                                     progress=progress, confine_images=False, notes=[])
    return paths, missing


def load_catalogue(
    path: str | Path,
    *,
    text_cols: Sequence[str],
    label_col: str | None = None,
    label_level: int | None = None,
    label_depth: int | None = None,
    image_col: str | None = None,
    image_dir: str | Path | None = None,
    encoding: str = "utf-8",
    require_labels: bool = False,
    check_images: bool = True,
    progress: bool = False,
    confine_images: bool = False,
) -> Catalogue:
    """Import a catalogue CSV mapped by column names.

    text = `text_cols` joined with `join_text`; label = `label_col` — a column of class names,
    a column of category paths or comma-separated columns, one per level (a path, cut to
    `label_depth` levels; or one level of it, `label_level`: a flat label); image = `image_col` resolved as URL (downloaded, cached),
    absolute path, or path relative to `image_dir` (default: the CSV's folder). Broken or
    missing images are reported, never fatal. `require_labels` (training) demands at least
    two classes. `confine_images` (for untrusted uploads) refuses absolute paths and paths
    that leave the image folder.
    """
    source = Path(path).expanduser()
    text_cols = [text_cols] if isinstance(text_cols, str) else list(text_cols)
    _check_mapping(source, text_cols, label_col, label_level, image_col, require_labels, label_depth)
    frame = read_csv(source, encoding=encoding)
    return catalogue_from_frame(frame, source, text_cols=text_cols, label_col=label_col, label_level=label_level,
                                label_depth=label_depth, image_col=image_col, image_dir=image_dir,
                                require_labels=require_labels, check_images=check_images, progress=progress,
                                confine_images=confine_images)


def catalogue_from_frame(
    frame: pd.DataFrame,
    source: Path,
    *,
    text_cols: Sequence[str],
    label_col: str | None = None,
    label_level: int | None = None,
    label_depth: int | None = None,
    image_col: str | None = None,
    image_dir: str | Path | None = None,
    require_labels: bool = False,
    check_images: bool = True,
    progress: bool = False,
    confine_images: bool = False,
) -> Catalogue:
    """`load_catalogue` on rows already read (all values text, as `read_csv` gives them):
    a shard, or a batch of one on a worker of the Ray engine. `source` names the file in
    messages and is where relative photo names live unless `image_dir` says otherwise."""
    text_cols = [text_cols] if isinstance(text_cols, str) else list(text_cols)
    frame = frame.reset_index(drop=True)
    name, n = source.name, len(frame)
    text_names = [_column(frame, c, "text", source) for c in text_cols]
    label_names = _label_columns(frame, label_col, source) if label_col is not None else []
    label_name = ",".join(label_names) if label_names else None
    image_name = _column(frame, image_col, "image", source) if image_col is not None else None
    notes: list[str] = []

    texts, empty_rows, duplicates = _read_texts(frame, text_names)
    labels = _read_labels(frame, label_names, label_level, label_depth, name, notes) if label_names else [None] * n
    per_class = _count_classes(labels, label_name, name, require_labels, notes)

    image_paths: list[Path | None] = [None] * n
    missing: list[dict[str, Any]] = []
    no_image_rows: list[int] = []
    if image_name is not None:
        base_dir = Path(image_dir).expanduser() if image_dir is not None else source.parent
        if image_dir is not None and not base_dir.is_dir():
            raise InputError(f"image folder not found: {base_dir}")
        image_paths, missing, no_image_rows = _read_images(frame, image_name, base_dir, check_images=check_images,
                                                           progress=progress, confine_images=confine_images,
                                                           notes=notes)

    usable = [bool(t) or p is not None for t, p in zip(texts, image_paths)]
    report = ImportReport(
        source=str(source), rows=n, labelled=sum(1 for v in labels if v is not None), per_class=per_class,
        missing_images=missing, empty_texts=len(empty_rows), empty_text_rows=empty_rows,
        duplicate_texts=duplicates, unusable_rows=[i + 1 for i, ok in enumerate(usable) if not ok],
        unlabelled_rows=[i + 1 for i, v in enumerate(labels) if v is None] if label_name else [],
        no_image_rows=no_image_rows, text_columns=text_names, label_column=label_name,
        label_level=int(label_level) if label_level is not None else None,
        label_depth=int(label_depth) if label_depth is not None else None, image_column=image_name, notes=notes,
    )
    catalogue = Catalogue(source=source, frame=frame, texts=texts, labels=labels, image_paths=image_paths,
                          usable=usable, report=report, text_cols=text_names, label_col=label_name,
                          label_level=report.label_level, image_col=image_name, label_depth=report.label_depth)
    cap_catalogue_texts(catalogue)
    return catalogue


def cap_catalogue_texts(catalogue: Catalogue) -> list[int]:
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
        catalogue.report.notes.append(f"{len(cut_rows):,} description(s) longer than {MAX_TEXT_CHARS:,} characters "
                                      f"were cut to that length (rows {_rows_text(cut_rows)})")
    return catalogue.report.cut_text_rows
