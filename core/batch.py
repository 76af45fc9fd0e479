"""Batch scoring from an upload: a CSV (+ a zip of its photos), mapped to columns the way
the CLI maps them, scored in chunks with progress, and recorded in one transaction so a
failure leaves no partial batch. Every scored product enters the review queue.

Uploads are staged under <home>/data/uploads/<id>/; zip members are checked before
anything is extracted (no absolute paths, no `..`, bounded size and count).
"""

from __future__ import annotations

import io
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import pandas as pd

from core.auth import User, require
from core.catalog import Catalogue, load_catalogue, read_csv
from core.classifier import Classifier
from core.errors import InputError
from core.scoring import insert_product, margin, prediction_row
from core.settings import get_settings
from core.store import Store
from core.uploads import record_image, store_image_file

MAX_ZIP_BYTES = 2 * 1024**3      # uncompressed total
MAX_ZIP_MEMBERS = 50_000
MAX_ROWS = 20_000
CHUNK = 64

Progress = Callable[[float, str], None]


@dataclass
class StagedUpload:
    folder: Path
    csv_path: Path
    image_dir: Path
    columns: list[str]
    rows: int


def _safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputError(f"the zip has {len(members):,} files; at most {MAX_ZIP_MEMBERS:,}")
    if sum(m.file_size for m in members) > MAX_ZIP_BYTES:
        raise InputError(f"the zip unpacks to more than {MAX_ZIP_BYTES // 1024**3} GB")
    for m in members:
        name = PurePosixPath(m.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or ":" in m.filename:
            raise InputError(f"the zip contains an unsafe path: {m.filename!r}")
    return [m for m in members if not PurePosixPath(m.filename).name.startswith(".")
            and "__MACOSX" not in PurePosixPath(m.filename).parts]


def _best_image_dir(root: Path, values: list[str]) -> Path:
    """The extracted folder that resolves the most image names of the CSV (zips often
    wrap their photos in a top folder the CSV does not mention)."""
    names = [v for v in values if v and not v.lower().startswith(("http://", "https://"))]
    if not names:
        return root
    candidates = [root] + sorted(p for p in root.rglob("*") if p.is_dir() and len(p.relative_to(root).parts) <= 3)
    return max(candidates, key=lambda d: sum((d / v).is_file() for v in names[:500]))


def stage_upload(csv_bytes: bytes, csv_name: str = "batch.csv", zip_bytes: bytes | None = None,
                 encoding: str = "utf-8") -> StagedUpload:
    """Keep an uploaded CSV (and unpack its zip of photos) for mapping and scoring."""
    if not csv_bytes or not csv_bytes.strip():
        raise InputError(f"{csv_name}: file is empty (no rows)")
    folder = get_settings().data_dir / "uploads" / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True)
    try:
        return _stage(folder, csv_bytes, csv_name, zip_bytes, encoding)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused upload leaves nothing behind
        raise


def _stage(folder: Path, csv_bytes: bytes, csv_name: str, zip_bytes: bytes | None, encoding: str) -> StagedUpload:
    name = Path(csv_name.replace("\\", "/")).name
    csv_path = folder / (name if name not in ("", ".", "..", "images") else "batch.csv")
    csv_path.write_bytes(csv_bytes)
    frame = read_csv(csv_path, encoding=encoding)
    if len(frame) > MAX_ROWS:
        raise InputError(f"{csv_name}: {len(frame):,} rows; score at most {MAX_ROWS:,} at a time "
                         "(the CLI `python -m core predict` has no limit)")
    image_dir = folder
    if zip_bytes:
        try:
            archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
        except zipfile.BadZipFile:
            raise InputError("the image archive is not a valid zip file") from None
        with archive:
            members = _safe_members(archive)
            target = folder / "images"
            try:
                for m in members:
                    archive.extract(m, target)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise InputError(f"the zip could not be unpacked: {exc}") from None
        values = [str(v) for col in frame.columns for v in frame[col].tolist()[:500]]
        image_dir = _best_image_dir(target, values)
    return StagedUpload(folder, csv_path, image_dir, list(frame.columns), len(frame))


def load_staged(upload: StagedUpload, *, text_cols: list[str], image_col: str | None = None,
                label_col: str | None = None, label_level: int | None = None, encoding: str = "utf-8",
                require_labels: bool = False) -> Catalogue:
    """The staged CSV as a Catalogue; photos must stay inside the upload's folder."""
    if not text_cols and not image_col:
        raise InputError("choose at least one text column or an image column")
    return load_catalogue(upload.csv_path, text_cols=text_cols, image_col=image_col, image_dir=upload.image_dir,
                          label_col=label_col, label_level=label_level, encoding=encoding,
                          require_labels=require_labels, confine_images=True)


@dataclass
class BatchResult:
    frame: pd.DataFrame      # one row per CSV row, in order
    product_ids: list[int]
    scored: int
    skipped: int


def score_batch(store: Store, classifier: Classifier, user: User, catalogue: Catalogue, *,
                source: str | None = None, on_progress: Progress | None = None, chunk: int = CHUNK) -> BatchResult:
    """Score every usable row and record products + predictions together at the end."""
    require(user, "batch")
    progress = on_progress or (lambda fraction, message: None)
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
                stored[i] = store_image_file(path, what=f"row {i + 1}")
        progress(min(len(rows), start + chunk) / len(rows) * 0.95, f"scored {min(len(rows), start + chunk)} of {len(rows)}")

    product_ids: dict[int, int] = {}
    with store.transaction() as db:
        for i in rows:
            image_hash = record_image(db, stored[i]) if i in stored else None
            label = catalogue.labels[i] if catalogue.label_col else None
            product_ids[i] = insert_product(db, catalogue.texts[i], image_hash, source, user.username,
                                            source_ref=str(i + 1), true_label=label)
            db["predictions"].insert(prediction_row(product_ids[i], predictions[i], None, user.username))
    progress(1.0, f"saved {len(rows)} products")
    return BatchResult(result_frame(catalogue, predictions, product_ids), list(product_ids.values()),
                       len(rows), len(catalogue) - len(rows))


def result_frame(catalogue: Catalogue, predictions: dict, product_ids: dict[int, int]) -> pd.DataFrame:
    """The table the user sees and downloads: one row per CSV row, skipped rows say why."""
    out = []
    for i in range(len(catalogue)):
        p = predictions.get(i)
        row = {"row": i + 1, "text": catalogue.texts[i][:200],
               "image": catalogue.image_paths[i].name if catalogue.image_paths[i] is not None else ""}
        if p is None:
            row.update(status="skipped: no description and no usable image")
        else:
            top = p.top(3)
            row.update(status="scored", product_id=product_ids[i], label=p.label,
                       confidence=round(float(p.confidence), 4), margin=round(margin(p.fused), 4),
                       text_label=p.text_label or "", image_label=p.image_label or "", disagree=bool(p.disagree),
                       top3="; ".join(f"{l} {v:.0%}" for l, v in top))
        out.append(row)
    frame = pd.DataFrame(out)
    for col in ("product_id",):
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")

