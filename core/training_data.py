"""The labelled data the app trains on, kept in the database.

An imported catalogue becomes products with their given label; a fixed slice of it is
frozen for evaluation at import (chosen by a hash of the de-duplicated text, so the same
text always lands on the same side and a re-import never leaks it into training).
Training then reads every labelled product: the catalogue label, overridden by the
latest accept/correct decision of a reviewer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from core.auth import User, require
from core.catalog import Catalogue, ImportReport, normalize_text
from core.scoring import insert_product
from core.store import Store
from core.uploads import image_path, record_image, store_image_file

EVAL_PERCENT = 15


def split_of(text: str, image_hash: str | None = None) -> str:
    """'eval' for a fixed ~15% of distinct products, else 'train'."""
    key = normalize_text(text).casefold() or (image_hash or "")
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100
    return "eval" if bucket < EVAL_PERCENT else "train"


@dataclass
class ImportSummary:
    source: str
    added: int
    duplicates: int
    unusable: int
    eval_rows: int
    per_class: dict[str, int] = field(default_factory=dict)


def import_catalogue(store: Store, user: User, catalogue: Catalogue, name: str,
                     on_progress: Callable[[float, str], None] | None = None) -> ImportSummary:
    """Add a labelled catalogue's usable rows as products (photos stored by hash), all
    in one transaction. Rows already imported from the same source are skipped."""
    require(user, "train")
    progress = on_progress or (lambda f, m: None)
    source = f"catalogue:{name}"
    rows = [i for i in range(len(catalogue)) if catalogue.usable[i] and catalogue.labels[i] is not None]
    stored = {}
    for n, i in enumerate(rows):
        if catalogue.image_paths[i] is not None:
            stored[i] = store_image_file(catalogue.image_paths[i], what=f"row {i + 1}")
        if n % 20 == 0:
            progress(0.9 * n / max(1, len(rows)), f"stored {n} of {len(rows)} photos")
    added = duplicates = eval_rows = 0
    per_class: dict[str, int] = {}
    with store.transaction() as db:
        existing = {(r[0], r[1], r[2]) for r in db.execute(
            "SELECT text, image_hash, true_label FROM products WHERE source = ?", [source]).fetchall()}
        for i in rows:
            image_hash = record_image(db, stored[i]) if i in stored else None
            key = (catalogue.texts[i], image_hash, catalogue.labels[i])
            if key in existing:
                duplicates += 1
                continue
            existing.add(key)
            split = split_of(catalogue.texts[i], image_hash)
            insert_product(db, catalogue.texts[i], image_hash, source, user.username, source_ref=str(i + 1),
                           true_label=catalogue.labels[i], split=split)
            added += 1
            eval_rows += split == "eval"
            per_class[catalogue.labels[i]] = per_class.get(catalogue.labels[i], 0) + 1
        store.audit(user.username, "catalogue.import", {"source": source, "added": added, "duplicates": duplicates,
                                                          "file": str(catalogue.source)}, db=db)
    progress(1.0, f"imported {added} products")
    return ImportSummary(source, added, duplicates, len(catalogue) - len(rows), eval_rows, per_class)


# Each product's effective label: the latest accept/correct review, else the catalogue's.
LABELLED = """
SELECT p.id, p.text, p.image_hash, p.split, p.source, p.true_label,
       r.new_label AS reviewed_label, r.reviewer, r.created_at AS reviewed_at,
       COALESCE(r.new_label, p.true_label) AS label
FROM products p
LEFT JOIN (SELECT product_id, MAX(id) AS id FROM reviews WHERE decision IN ('accept', 'correct')
           GROUP BY product_id) last ON last.product_id = p.id
LEFT JOIN reviews r ON r.id = last.id
WHERE COALESCE(r.new_label, p.true_label) IS NOT NULL
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
    return pd.DataFrame(store.query("""
        SELECT product_id, COUNT(DISTINCT new_label) AS labels, GROUP_CONCAT(reviewer || ': ' || new_label, '; ')
               AS decisions
        FROM (SELECT * FROM reviews WHERE decision IN ('accept', 'correct') ORDER BY id)  -- decisions in order
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
