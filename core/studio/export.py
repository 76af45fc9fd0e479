"""Export: the labelled dataset (one row per product with its effective label and where
that label came from) and the decision log, as CSV or Parquet.

The label is the store's `effective_labels` view (the latest settled decision not undone,
else the catalogue's). A viewer's suggestion is only ever the label of a product that has
neither — and says so in `label_source`, so whoever trains on the file can leave it out.
CSV cells that a spreadsheet would run as a formula are defused (OWASP "CSV injection").
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from core.common.errors import InputError
from core.common.files import atomic_write_bytes, safe_csv_bytes
from core.common.settings import get_settings
from core.studio.auth import User, require_current
from core.studio.browse import nullable_ints
from core.studio.store import SUGGEST, Store

FORMATS = {".csv": "text/csv", ".parquet": "application/vnd.apache.parquet"}
DATASET_COLUMNS = ["product_id", "external_id", "text", "image_path", "label", "label_source", "eval_slice",
                   "source", "reviewer", "decided_at"]
LOG_COLUMNS = ["review_id", "product_id", "external_id", "decision", "old_label", "new_label", "reviewer",
               "created_at", "note", "model_version", "prediction_id", "bulk_id", "replaces", "revoked_at",
               "revoked_by"]

# Every product with a label (catalogue, reviewer, or — lacking both — a viewer's latest
# suggestion) or decided out of scope.
_DATASET = f"""
SELECT p.id AS product_id, p.external_id, p.text, i.path AS image_path,
       COALESCE(e.label, CASE WHEN e.label_source IS NULL THEN sg.new_label END) AS label,
       COALESCE(e.label_source, CASE WHEN sg.new_label IS NOT NULL THEN 'suggestion' END) AS label_source,
       COALESCE(p.split = 'eval', 0) AS eval_slice, p.source,
       COALESCE(e.reviewer, CASE WHEN e.label_source IS NULL THEN sg.reviewer END) AS reviewer,
       COALESCE(e.reviewed_at, CASE WHEN e.label_source IS NULL THEN sg.created_at END) AS decided_at
FROM products p
JOIN effective_labels e ON e.product_id = p.id
LEFT JOIN images i ON i.hash = p.image_hash
LEFT JOIN (SELECT product_id, MAX(id) AS id FROM live_reviews WHERE decision = '{SUGGEST}' AND new_label IS NOT NULL
           GROUP BY product_id) last_sg ON last_sg.product_id = p.id
LEFT JOIN reviews sg ON sg.id = last_sg.id
WHERE e.label_source IS NOT NULL OR sg.new_label IS NOT NULL
ORDER BY p.id
"""


def _relative_to_home(stored: str | None) -> str:
    """An `images.path` (relative to the data folder) as a path relative to the home."""
    if not stored:
        return ""
    settings = get_settings()
    path = settings.data_dir / stored
    try:
        return path.relative_to(settings.home).as_posix()
    except ValueError:  # a data folder outside the home
        return path.as_posix()


def labelled_dataset(store: Store, user: User) -> pd.DataFrame:
    """One row per labelled product: id, the catalogue's id, text, the photo's path (relative
    to the home, empty without one), the effective label, where it came from (catalogue /
    reviewer / suggestion / out_of_scope with an empty label) and the evaluation-slice flag."""
    require_current(store, user, "review")
    frame = pd.DataFrame(store.query(_DATASET), columns=DATASET_COLUMNS)
    frame["image_path"] = frame["image_path"].map(_relative_to_home)
    frame["label"] = frame["label"].fillna("")
    frame["eval_slice"] = frame["eval_slice"].astype(bool)
    return frame


def decision_log(store: Store, user: User) -> pd.DataFrame:
    """Every decision and suggestion ever made, undone ones included, oldest first."""
    require_current(store, user, "review")
    rows = store.query("""SELECT r.id AS review_id, r.product_id, p.external_id, r.decision, r.old_label,
                                 r.new_label, r.reviewer, r.created_at, r.note, r.model_version, r.prediction_id,
                                 r.bulk_id, r.replaces, r.revoked_at, r.revoked_by
                          FROM reviews r JOIN products p ON p.id = r.product_id ORDER BY r.id""")
    return nullable_ints(pd.DataFrame(rows, columns=LOG_COLUMNS))


def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """`frame` as the bytes of a .csv (UTF-8, formula cells defused) or .parquet file."""
    fmt = fmt.lower() if fmt.startswith(".") else f".{fmt.lower()}"
    if fmt == ".csv":
        return safe_csv_bytes(frame)
    if fmt == ".parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, engine="pyarrow")
        return buffer.getvalue()
    raise InputError(f"unknown export format '{fmt}'; write a .csv or a .parquet file")


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` to `path` (.csv or .parquet by its extension) so that a failure never
    leaves half a file or destroys the previous one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path.name}: unknown extension '{path.suffix}'; write a .csv or a .parquet file")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    return atomic_write_bytes(path, table_bytes(frame, suffix), prefix=f".{path.name}.")
