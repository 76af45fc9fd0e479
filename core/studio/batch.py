"""Batch scoring from an upload: a CSV (+ a zip of its photos), mapped to columns the way
the CLI maps them, scored in chunks with progress, and recorded in one transaction so a
failure leaves no partial batch. Every scored product enters the review queue.

Uploads are staged under <home>/data/uploads/<id>/ and removed once scored or imported
(`discard_upload`; abandoned ones after a day, `remove_stale_uploads`); zip members are
checked before anything is extracted (no absolute paths, no `..`, bounded size, count and
expansion ratio). Which folder
of the zip holds the photos is decided from the *image column's* values only, matched as
strings against the zip's own member list: no cell of the CSV is ever used as a path on
disk (a long description would raise "File name too long"), and the work is bounded.

Messages shown to the user name files relative to the upload (see `StagedUpload.public`),
never the server's folders.
"""

from __future__ import annotations

import io
import re
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import pandas as pd

from core.common.errors import InputError, one_line
from core.common.files import safe_csv_bytes
from core.common.settings import get_settings
from core.common.text import MAX_TEXT_CHARS
from core.data.catalogue import Catalogue, cap_catalogue_texts, load_catalogue
from core.data.columns import ColumnGuess, guess_columns
from core.data.csv_files import read_csv
from core.models.classifier import Classifier
from core.studio.auth import User, require_current
from core.studio.scoring import find_or_insert_product, margin, prediction_row
from core.studio.store import Store
from core.studio.uploads import record_image, store_image_file

MAX_ZIP_BYTES = 2 * 1024**3      # uncompressed total
MAX_ZIP_MEMBERS = 50_000
MAX_ZIP_RATIO = 100              # uncompressed / compressed, per member and overall (zip bombs)
ZIP_RATIO_FLOOR = 1024**2        # members (and zips) smaller than this unpacked are not held to the ratio
STALE_UPLOAD_S = 24 * 3600       # staged uploads older than this are removed
MAX_ROWS = 20_000
CHUNK = 64
MAX_NAME_BYTES = 255             # one path component (Linux NAME_MAX)
MAX_PATH_CHARS = 1024
IMAGE_DIR_SAMPLE = 500           # image names tried when locating the photo folder
MAX_IMAGE_DIR_DEPTH = 3

Progress = Callable[[float, str], None]


@dataclass
class StagedUpload:
    """An upload kept for mapping and scoring (or a CSV in a folder on the server).

    `image_root` is where the zip was unpacked (uploads) or the default photo folder
    (server folders); `image_files` lists the zip's files relative to it (None when
    there is no zip). `confined`: photos must stay inside the upload (untrusted)."""

    folder: Path
    csv_path: Path
    columns: list[str]
    rows: int
    guess: ColumnGuess = field(default_factory=ColumnGuess)
    image_root: Path | None = None
    image_files: frozenset[str] | None = None
    confined: bool = True
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def image_dir(self) -> Path:
        """The photo folder for the guessed image column."""
        return self.image_dir_for(None)

    def image_dir_for(self, image_col: str | None) -> Path:
        """The folder the image column's names are relative to: for a zip, its folder
        that holds the most of them (zips often wrap the photos in a top folder the CSV
        does not mention)."""
        root = self.image_root or self.folder
        column = image_col or self.guess.image
        if self.image_files is None or column is None or self.frame is None or column not in self.frame:
            return root
        return root / _best_image_prefix(self.image_files, self.frame[column].tolist())

    def public(self, text: str) -> str:
        """`text` with the server's folders replaced by names relative to the upload: an
        image that is not found reads "file not found: photos/x.jpg", not /srv/…/x.jpg."""
        replacements = []
        if self.image_root is not None:
            replacements.append((self.image_root, "the zip" if self.image_files is not None else
                                 self.image_root.name))
        replacements += [(self.folder, "the upload" if self.confined else self.folder.name),
                         (get_settings().data_dir, "the data folder")]
        for path, name in replacements:
            text = text.replace(f"{path}/", "").replace(str(path), name)
        return text

    def report_lines(self, catalogue: Catalogue, limit: int = 8) -> list[str]:
        """The import report of `catalogue` for the page, paths made relative."""
        return [self.public(line) for line in catalogue.report.summary_lines()[:limit]]


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputError(f"the zip has {len(members):,} files; at most {MAX_ZIP_MEMBERS:,}")
    total = sum(m.file_size for m in members)
    if total > MAX_ZIP_BYTES:
        raise InputError(f"the zip unpacks to more than {MAX_ZIP_BYTES // 1024**3} GB")
    for m in members:  # photos hardly compress: a member that expands 100-fold is a bomb, not a photo
        if m.file_size > ZIP_RATIO_FLOOR and m.file_size > MAX_ZIP_RATIO * max(1, m.compress_size):
            raise InputError(f"the zip member {m.filename!r} expands more than {MAX_ZIP_RATIO}-fold "
                             f"({m.compress_size:,} → {m.file_size:,} bytes); refused as a zip bomb")
    packed = sum(m.compress_size for m in members)
    if total > ZIP_RATIO_FLOOR and total > MAX_ZIP_RATIO * max(1, packed):
        raise InputError(f"the zip expands more than {MAX_ZIP_RATIO}-fold ({packed:,} → {total:,} bytes); "
                         "refused as a zip bomb")
    for m in members:
        name = PurePosixPath(m.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in m.filename:
            raise InputError(f"the zip contains an unsafe path: {m.filename!r}")
    return [m for m in members if not PurePosixPath(m.filename).name.startswith(".")
            and "__MACOSX" not in PurePosixPath(m.filename).parts]


def _impossible_name(text: str) -> bool:
    """Whether `text` cannot be a file name on any disk (too long, a NUL byte): looking it
    up would raise OSError instead of answering "not found"."""
    parts = text.replace("\\", "/").split("/")
    return (len(text) > MAX_PATH_CHARS or "\x00" in text
            or any(len(part.encode("utf-8", "replace")) > MAX_NAME_BYTES for part in parts))


def _as_relative_name(value: object) -> str | None:
    """A CSV cell as a relative file name inside an upload, or None when it cannot be
    one (empty, a URL, absolute, `..`, or longer than a file system allows)."""
    text = str(value).strip().replace("\\", "/")
    if not text or _impossible_name(text) or re.match(r"^[a-z][a-z0-9+.-]*://", text, re.I):
        return None
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts:
        return None
    return str(path)


def _best_image_prefix(files: Iterable[str], values: Iterable[object]) -> str:
    """The folder (relative, "" = the zip's top) under which the most image names of the
    CSV exist in the zip. Pure string matching on the member list: no file system call,
    no OSError. One pass over the members (each split at most MAX_IMAGE_DIR_DEPTH times),
    so the time grows with the zip, never with members × folders × names."""
    names: set[str] = set()
    for value in values:
        name = _as_relative_name(value)
        if name is not None:
            names.add(name)
        if len(names) >= IMAGE_DIR_SAMPLE:
            break
    if not names:
        return ""
    hits: dict[str, int] = {"": 0}
    for member in files:
        if member in names:
            hits[""] += 1
        parts = member.split("/")
        for depth in range(1, min(len(parts) - 1, MAX_IMAGE_DIR_DEPTH) + 1):
            prefix = "/".join(parts[:depth])
            hits.setdefault(prefix, 0)
            if "/".join(parts[depth:]) in names:
                hits[prefix] += 1
    # most hits; on a tie the shallowest, then the first by name
    return max(sorted(hits, key=lambda p: (p.count("/"), p)), key=lambda p: hits[p])


def stage_upload(csv_bytes: bytes, csv_name: str = "batch.csv", zip_bytes: bytes | None = None,
                 encoding: str = "utf-8") -> StagedUpload:
    """Keep an uploaded CSV (and unpack its zip of photos) for mapping and scoring."""
    if not csv_bytes or not csv_bytes.strip():
        raise InputError(f"{csv_name}: file is empty (no rows)")
    remove_stale_uploads()  # each new upload sweeps the ones abandoned long ago
    folder = uploads_dir() / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    try:
        return _stage(folder, csv_bytes, csv_name, zip_bytes, encoding)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing behind
        raise


def uploads_dir() -> Path:
    """Where uploads are staged (and only there: `discard_upload` removes nothing else)."""
    return get_settings().data_dir / "uploads"


def discard_upload(upload: StagedUpload | None) -> None:
    """Remove a staged upload once it is scored or imported (its photos are stored by then).
    A CSV in a folder on the server (`open_folder_csv`) is the admin's and is never touched."""
    if upload is None or not upload.confined:
        return
    root = uploads_dir().resolve()
    folder = upload.folder.resolve()
    if folder.parent == root:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_uploads(max_age_s: float = STALE_UPLOAD_S) -> int:
    """Remove staged uploads not touched for `max_age_s` (abandoned pages, crashes): the disk
    stays bounded without anyone cleaning up. Returns how many were removed."""
    root = uploads_dir()
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    removed = 0
    for folder in root.iterdir():
        try:
            if folder.is_dir() and not folder.is_symlink() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


def tidy_disk() -> None:
    """At start-up: staged uploads abandoned for a day are removed and the URL download
    cache is trimmed to its size limit, so the disk stays bounded across restarts."""
    from core.data.downloads import trim_download_cache

    remove_stale_uploads()
    trim_download_cache()


def _stage(folder: Path, csv_bytes: bytes, csv_name: str, zip_bytes: bytes | None, encoding: str) -> StagedUpload:
    name = Path(csv_name.replace("\\", "/")).name
    csv_path = folder / (name if name not in ("", ".", "..", "images") else "batch.csv")
    csv_path.write_bytes(csv_bytes)
    frame = read_csv(csv_path, encoding=encoding)
    if len(frame) > MAX_ROWS:
        raise InputError(f"{csv_name}: {len(frame):,} rows; score at most {MAX_ROWS:,} at a time "
                         "(the CLI `python -m core predict` has no limit)")
    image_root, image_files = None, None
    if zip_bytes:
        try:
            archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
        except zipfile.BadZipFile:
            raise InputError("the image archive is not a valid zip file") from None
        image_root = folder / "images"
        with archive:
            members = _safe_members(archive)
            try:
                for m in members:
                    archive.extract(m, image_root)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
                raise InputError(f"the zip could not be unpacked: {reason}") from None
        image_files = frozenset(str(PurePosixPath(m.filename.replace("\\", "/"))) for m in members)
    return StagedUpload(folder, csv_path, list(frame.columns), len(frame), guess_columns(frame),
                        image_root, image_files, confined=True, frame=frame)


def server_csvs(store: Store, user: User, folder: str | Path) -> list[Path]:
    """The CSV files an admin may import from a folder on the server (or the CSV named);
    InputError when there is none. Reading the server's disk is the training role's."""
    require_current(store, user, "train")
    path = Path(str(folder).strip()).expanduser()
    csvs = sorted(path.glob("*.csv")) if path.is_dir() else ([path] if path.suffix == ".csv" and path.is_file() else [])
    if not csvs:
        raise InputError(f"no CSV file in {path}")
    return csvs


def open_folder_csv(csv_path: Path, encoding: str = "utf-8") -> StagedUpload:
    """A CSV already on the server (an admin's folder) in the same shape as an upload:
    photos under its `images/` folder if there is one, else beside it."""
    frame = read_csv(csv_path, encoding=encoding)
    images = csv_path.parent / "images"
    return StagedUpload(csv_path.parent, csv_path, list(frame.columns), len(frame), guess_columns(frame),
                        images if images.is_dir() else csv_path.parent, None, confined=False, frame=frame)


def check_image_column(upload: StagedUpload, image_col: str) -> None:
    """Refuse an image column whose values cannot be file names (a description chosen
    by mistake), naming the column and the first such row, before any file is looked up."""
    if upload.frame is None or image_col not in upload.frame:
        return  # load_catalogue names a missing column
    for row, value in enumerate(upload.frame[image_col].tolist(), start=1):
        text = str(value).strip()
        if text and not re.match(r"^https?://", text, re.I) and _impossible_name(text):
            raise InputError(f"{upload.csv_path.name}: column '{image_col}' does not hold image file names "
                             f"(row {row} is {len(text):,} characters: {text[:40]!r}…); choose the column "
                             "with the photos' file names, or (none)")


def load_staged(upload: StagedUpload, *, text_cols: list[str], image_col: str | None = None,
                label_col: str | None = None, label_level: int | None = None, label_depth: int | None = None,
                encoding: str = "utf-8",
                require_labels: bool = False) -> Catalogue:
    """The staged CSV as a Catalogue; photos must stay inside the upload's folder."""
    if not text_cols and not image_col:
        raise InputError("choose at least one text column or an image column")
    if image_col:
        check_image_column(upload, image_col)
    return load_catalogue(upload.csv_path, text_cols=text_cols, image_col=image_col,
                          image_dir=upload.image_dir_for(image_col), label_col=label_col, label_level=label_level,
                          label_depth=label_depth,
                          encoding=encoding, require_labels=require_labels, confine_images=upload.confined)


@dataclass
class BatchResult:
    frame: pd.DataFrame      # one row per CSV row, in order
    product_ids: list[int]
    scored: int
    skipped: int
    new_products: int = 0  # scored rows that were not known products already (the rest got a new prediction)


def score_batch(store: Store, classifier: Classifier, user: User, catalogue: Catalogue, *,
                source: str | None = None, on_progress: Progress | None = None, chunk: int = CHUNK) -> BatchResult:
    """Score every usable row and record products + predictions together at the end.

    Memory stays flat in the number of photos: the model decodes one chunk at a time and
    each stored photo keeps only its hash and metadata (`StoredImage.without_image`).
    Descriptions over the one cap (`core.common.text.MAX_TEXT_CHARS`) are cut; their rows'
    status and the import report say so."""
    user = require_current(store, user, "batch")
    progress = on_progress or (lambda fraction, message: None)
    cut_rows = cap_catalogue_texts(catalogue)
    rows = [i for i in range(len(catalogue)) if catalogue.usable[i]]
    if not rows:
        raise InputError(f"{catalogue.source.name}: no row has a description or a usable image")
    source = source or f"batch:{catalogue.source.parent.name}/{catalogue.source.name}"

    predictions, stored = {}, {}
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        result = classifier.predict_batch([catalogue.texts[i] for i in part], [catalogue.image_paths[i] for i in part])
        for j, i in enumerate(part):
            predictions[i] = result.row(j)
            path = catalogue.image_paths[i]
            if path is not None and result.has_image[j]:
                stored[i] = store_image_file(path, what=f"row {i + 1}").without_image()
        del result
        progress(min(len(rows), start + chunk) / len(rows) * 0.95, f"scored {min(len(rows), start + chunk)} of {len(rows)}")

    product_ids: dict[int, int] = {}
    new = 0
    with store.transaction() as db:
        for i in rows:
            image_hash = record_image(db, stored[i]) if i in stored else None
            label = catalogue.labels[i] if catalogue.label_col else None
            product_ids[i], created = find_or_insert_product(db, catalogue.texts[i], image_hash, source,
                                                             user.username, source_ref=str(i + 1), true_label=label)
            new += created
            db["predictions"].insert(prediction_row(product_ids[i], predictions[i], None, user.username))
    progress(1.0, f"saved {len(rows)} products")
    frame = result_frame(catalogue, predictions, product_ids)
    if cut_rows:
        frame.loc[frame["row"].isin(cut_rows) & (frame["status"] == "scored"), "status"] = (
            f"scored (description cut to its first {MAX_TEXT_CHARS:,} characters)")
    return BatchResult(frame, list(product_ids.values()), len(rows), len(catalogue) - len(rows), new)


#: what scoring adds to each row; the first two lead the table and the download
RESULT_COLUMNS = ["label", "confidence", "disagree", "status", "margin", "text_label", "image_label", "top3",
                  "product_id", "row"]


def result_frame(catalogue: Catalogue, predictions: dict, product_ids: dict[int, int]) -> pd.DataFrame:
    """The table the user sees and downloads: one row per CSV row, in order; the predicted
    label and its confidence first, then the user's own columns (ids, names… exactly as
    uploaded, so the file joins back to theirs), then the details (a tree model: each
    level's name and confidence). Skipped rows say why.
    A user column whose name a result column takes is kept as "<name> (yours)"."""
    out = []
    for i in range(len(catalogue)):
        p = predictions.get(i)
        if p is None:
            row = {"status": "skipped: no description and no usable image"}
        else:
            top = p.top(3)
            row = dict(label=p.label, confidence=round(float(p.confidence), 4), disagree=bool(p.disagree),
                       status="scored", margin=round(margin(p.fused), 4), text_label=p.text_label or "",
                       image_label=p.image_label or "", top3="; ".join(f"{l} {v:.0%}" for l, v in top),
                       product_id=product_ids[i])
            for k, (name, conf) in enumerate(p.levels() if p.depth > 1 else [], start=1):
                row[f"level_{k}"], row[f"confidence_level_{k}"] = name, None if conf is None else round(conf, 4)
        row["row"] = i + 1
        out.append(row)
    depth = max((p.depth for p in predictions.values()), default=1)
    levels = [c for k in range(1, depth + 1) for c in (f"level_{k}", f"confidence_level_{k}")] if depth > 1 else []
    results = pd.DataFrame(out).reindex(columns=RESULT_COLUMNS + levels)
    results["product_id"] = results["product_id"].astype("Int64")
    results["disagree"] = results["disagree"].astype("boolean")
    yours = catalogue.frame.reset_index(drop=True)
    yours = yours.rename(columns={c: f"{c} (yours)" for c in yours.columns if c in RESULT_COLUMNS})
    lead, rest = results[RESULT_COLUMNS[:3]], results[RESULT_COLUMNS[3:] + levels]
    return pd.concat([lead, yours, rest], axis=1)


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The download: the result table as UTF-8 CSV, no index column, cells a spreadsheet
    would run as a formula defused (a product name "=HYPERLINK(…)" comes back as text)."""
    return safe_csv_bytes(frame)

