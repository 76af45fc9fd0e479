"""The labelled data the app trains on, kept in the database.

An imported catalogue becomes products with their given label; a fixed slice of it is
frozen for evaluation at import (chosen by a hash of the de-duplicated text, so the same
text always lands on the same side and a re-import never leaks it into training).
Training then reads every labelled product: the catalogue label, overridden by the
latest accept/correct decision of a reviewer.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from core.common.errors import InputError
from core.common.text import MAX_TEXT_CHARS, identity_key
from core.data.catalogue import Catalogue, ImportReport, cap_catalogue_texts
from core.studio.auth import User, require_current
from core.studio.batch import StagedUpload, discard_upload, load_staged
from core.studio.jobs import JobContext, start_job
from core.studio.scoring import find_product, insert_product
from core.studio.store import LABELLING_SQL, Store, content_key, text_key, utc_now
from core.studio.uploads import image_path, record_image, store_image_file

EVAL_PERCENT = 15


def split_of(text: str, image_hash: str | None = None) -> str:
    """'eval' for a fixed ~15% of distinct products, else 'train'."""
    key = identity_key(text) or (image_hash or "")
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "eval" if bucket < EVAL_PERCENT else "train"


@dataclass
class ImportSummary:
    source: str
    added: int       # products new to the database
    updated: int     # known products whose catalogue label changed
    unchanged: int   # known products, label as before (a re-import)
    unusable: int    # rows without a label, or without text and photo
    eval_rows: int   # of the added ones, how many went to the frozen evaluation slice
    per_class: dict[str, int] = field(default_factory=dict)  # added products per class
    cut_texts: list[int] = field(default_factory=list)  # rows whose description was cut to MAX_TEXT_CHARS

    def line(self) -> str:
        cut = (f"; {len(self.cut_texts):,} descriptions cut to {MAX_TEXT_CHARS:,} characters"
               if self.cut_texts else "")
        return (f"{self.added:,} new, {self.updated:,} updated, {self.unchanged:,} unchanged, "
                f"{self.unusable:,} rows skipped (no label, text or photo){cut}")


def _external_ids(catalogue: Catalogue, id_col: str | None) -> list[str | None]:
    """The catalogue's own product ids (one per row), when the import names an id column."""
    if not id_col:
        return [None] * len(catalogue)
    columns = {str(c).strip(): c for c in catalogue.frame.columns}
    if id_col.strip() not in columns:
        raise InputError(f"{catalogue.source.name}: no id column '{id_col}' (columns: {', '.join(columns)})")
    return [(" ".join(str(v).split()) or None) for v in catalogue.frame[columns[id_col.strip()]].tolist()]


@dataclass(frozen=True)
class CatalogueMapping:
    """Which columns of a catalogue CSV hold what (as the CLI's flags say it)."""

    text_cols: list[str]
    label_col: str | None
    label_level: int | None = None
    image_col: str | None = None
    id_col: str | None = None
    label_depth: int | None = None  # a category tree: learned down to this level (None: all of it)


def import_staged(store: Store, user: User, staged: StagedUpload, mapping: CatalogueMapping, name: str, *,
                  on_progress: Callable[[float, str], None] | None = None,
                  restage: Callable[[], StagedUpload] | None = None) -> tuple[ImportSummary, list[str]]:
    """The app's import of a staged CSV (+ photos) in one step: staged again (`restage`)
    when an earlier import removed its copy, read with `mapping`, imported, and the
    upload's copy removed whatever happens (a folder on the server is never touched).
    Returns the summary and the import report's first lines, paths made relative."""
    require_current(store, user, "train")
    if not staged.csv_path.exists() and restage is not None:
        staged = restage()
    try:
        catalogue = load_staged(staged, text_cols=mapping.text_cols, label_col=mapping.label_col,
                                label_level=mapping.label_level, label_depth=mapping.label_depth,
                                image_col=mapping.image_col, require_labels=True)
        summary = import_catalogue(store, user, catalogue, name, on_progress, id_col=mapping.id_col)
    finally:
        discard_upload(staged)  # photos are stored by now
    return summary, staged.report_lines(catalogue, limit=6)


def start_import(store: Store, user: User, staged: StagedUpload, mapping: CatalogueMapping, name: str, *,
                 background: bool = True) -> int:
    """`import_staged` as a background job (the HTTP API's catalogue ingest); returns the
    job id. The job's result is the summary's counts and the report's first lines."""
    require_current(store, user, "train")

    def work(context: JobContext, params: dict) -> dict:
        summary, report = import_staged(store, user, staged, mapping, name,
                                        on_progress=lambda f, m: context.progress(f, "importing", m))
        return {**asdict(summary), "line": summary.line(), "report": report}

    try:
        return start_job(store, user, work, {"name": name, "csv": staged.csv_path.name, **asdict(mapping)},
                         kind="import", permission="train", background=background)
    except BaseException:
        discard_upload(staged)  # not started (another import runs): the copy would be orphaned
        raise


def import_catalogue(store: Store, user: User, catalogue: Catalogue, name: str,
                     on_progress: Callable[[float, str], None] | None = None, *,
                     id_col: str | None = None) -> ImportSummary:
    """Add a labelled catalogue's usable rows as products (photos stored by hash), all in
    one transaction. A product already in the database — the same id in `id_col`, or else
    the same normalised text and photo — is updated (its catalogue label), never doubled;
    it keeps its evaluation-slice membership.

    Memory stays flat in the number of photos: each photo is decoded once to check it,
    stored, and only its hash and metadata are kept. Descriptions over the one cap
    (`core.common.text.MAX_TEXT_CHARS`) are cut, and the summary and the report say which."""
    user = require_current(store, user, "train")
    progress = on_progress or (lambda f, m: None)
    source = f"catalogue:{name}"
    external = _external_ids(catalogue, id_col)
    cut_rows = cap_catalogue_texts(catalogue)
    rows = [i for i in range(len(catalogue)) if catalogue.usable[i] and catalogue.labels[i] is not None]
    stored = {}
    for n, i in enumerate(rows):
        if catalogue.image_paths[i] is not None:
            stored[i] = store_image_file(catalogue.image_paths[i], what=f"row {i + 1}").without_image()
        if n % 20 == 0:
            progress(0.9 * n / max(1, len(rows)), f"stored {n} of {len(rows)} photos")
    added = updated = unchanged = eval_rows = 0
    per_class: dict[str, int] = {}
    now = utc_now()
    with store.transaction() as db:
        for i in rows:
            image_hash = record_image(db, stored[i]) if i in stored else None
            text, label = catalogue.texts[i], catalogue.labels[i]
            known = find_product(db, text, image_hash, external[i])
            if known is not None:
                old = db.execute("SELECT true_label, text, image_hash FROM products WHERE id = ?", [known]).fetchone()
                if tuple(old) == (label, text, image_hash):
                    unchanged += 1
                    continue
                db.execute("UPDATE products SET true_label = ?, text = ?, image_hash = ?, content_key = ?, "
                           "text_key = ?, updated_at = ? WHERE id = ?",
                           [label, text, image_hash, content_key(text, image_hash), text_key(text), now, known])
                updated += 1
                continue
            split = split_of(text, image_hash)
            insert_product(db, text, image_hash, source, user.username, source_ref=str(i + 1), true_label=label,
                           split=split, external_id=external[i])
            added += 1
            eval_rows += split == "eval"
            per_class[label] = per_class.get(label, 0) + 1
        store.audit(user.username, "catalogue.import", {"source": source, "added": added, "updated": updated,
                                                          "unchanged": unchanged, "file": catalogue.source.name}, db=db)
    progress(1.0, f"imported: {added} new, {updated} updated, {unchanged} unchanged")
    return ImportSummary(source, added, updated, unchanged, len(catalogue) - len(rows), eval_rows, per_class,
                         cut_rows)


# Each product's effective label (the view `effective_labels`: the latest settled decision
# not undone, else the catalogue's; out-of-scope products have none).
LABELLED = """
SELECT p.id, p.text, p.image_hash, p.split, p.source, p.true_label,
       CASE WHEN e.label_source = 'reviewer' THEN e.label END AS reviewed_label, e.reviewer,
       e.reviewed_at, e.label
FROM products p JOIN effective_labels e ON e.product_id = p.id
WHERE e.label IS NOT NULL
"""


def labelled_products(store: Store, split: str | None = None) -> pd.DataFrame:
    """Every product with an effective label (see LABELLED); `split` 'train' also takes
    reviewed products that were never assigned to a split (uploads, batches)."""
    sql = LABELLED
    if split == "train":
        sql += " AND COALESCE(p.split, 'train') = 'train'"
    elif split is not None:
        sql += " AND p.split = :split"
    return pd.DataFrame(store.query(sql + " ORDER BY p.id", {"split": split}),
                        columns=["id", "text", "image_hash", "split", "source", "true_label", "reviewed_label",
                                 "reviewer", "reviewed_at", "label"])


def label_conflicts(store: Store) -> pd.DataFrame:
    """Products whose reviewers disagreed (the latest decision is the one used)."""
    return pd.DataFrame(store.query(f"""
        SELECT product_id, COUNT(DISTINCT new_label) AS labels, GROUP_CONCAT(reviewer || ': ' || new_label, '; ')
               AS decisions
        FROM (SELECT * FROM live_reviews WHERE decision IN {LABELLING_SQL} ORDER BY id)  -- decisions in order
        GROUP BY product_id HAVING COUNT(DISTINCT new_label) > 1
        """), columns=["product_id", "labels", "decisions"])


def as_catalogue(frame: pd.DataFrame, name: str = "store") -> Catalogue:
    """Rows of `labelled_products` as a Catalogue the Trainer accepts."""
    texts = frame["text"].fillna("").astype(str).tolist()
    labels = frame["label"].astype(str).tolist()
    paths: list[Path | None] = [image_path(h) if isinstance(h, str) and h else None for h in frame["image_hash"]]
    usable = [bool(t.strip()) or p is not None for t, p in zip(texts, paths)]
    per_class = {label: labels.count(label) for label in sorted(set(labels))}
    report = ImportReport(source=name, rows=len(texts), labelled=len(labels), per_class=per_class,
                          text_columns=["text"], label_column="label", image_column="image")
    table = pd.DataFrame({"text": texts, "label": labels, "image": [str(p) if p else "" for p in paths]})
    return Catalogue(source=Path(name), frame=table, texts=texts, labels=labels, image_paths=paths, usable=usable,
                     report=report, text_cols=["text"], label_col="label", image_col="image")
