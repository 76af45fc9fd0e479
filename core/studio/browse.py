"""Find anything: the data browser over products, and one product's whole history.

Every product is shown with its latest prediction and its effective label. The label
rule ("the latest settled decision not undone, else the catalogue's") lives in the
store's `effective_labels` / `settled` views; this module only reads them, so the
browser, the queue, training and the export never disagree about a product's label.

Anyone who may watch the monitor may browse (viewers included): the browser shows what
the monitor already sums up, product by product, and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from core.common.errors import InputError, NotFound
from core.studio.auth import User, require
from core.studio.store import SUGGEST, Store, from_json

LABEL_KINDS = ("effective", "catalogue", "predicted", "reviewed", "any")
STATUSES = ("unreviewed", "decided", "skipped", "out_of_scope", "suggested")
DISAGREEMENTS = ("text_vs_image", "catalogue_vs_predicted", "any")
ORDERS: dict[str, str] = {
    "newest": "p.id DESC",
    "oldest": "p.id ASC",
    "least_confident": "pred.confidence IS NULL, pred.confidence ASC, p.id ASC",
    "most_confident": "pred.confidence IS NULL, pred.confidence DESC, p.id ASC",
}
MAX_LIMIT = 1000

COLUMNS = ["product_id", "external_id", "text", "source", "eval_slice", "catalogue_label", "predicted_label",
           "confidence", "text_label", "image_label", "disagree", "model_version", "predicted_at", "label",
           "label_source", "reviewer", "reviewed_at", "status", "suggestions", "image_hash"]


@dataclass
class BrowseFilters:
    """What the browser narrows products down to; None / empty means "any"."""

    text: str = ""  # case-insensitive substring of the description (or the catalogue's id)
    label: str | None = None
    label_kind: str = "effective"  # which label `label` must match: see LABEL_KINDS
    source: str | None = None
    min_confidence: float | None = None  # of the latest prediction, 0..1
    max_confidence: float | None = None
    disagreement: str | None = None  # text_vs_image / catalogue_vs_predicted / any
    reviewer: str | None = None  # products this person decided (a decision not undone)
    status: str | None = None  # see STATUSES
    eval_slice: bool | None = None  # True: only the frozen evaluation slice; False: only the rest
    order: str = "newest"
    limit: int = 50
    offset: int = 0

    def describe(self) -> str:
        """A short human description (kept with a bulk action, so its audit says what was selected)."""
        parts = []
        if self.text.strip():
            parts.append(f"text contains “{self.text.strip()}”")
        if self.label:
            parts.append(f"{self.label_kind} label = {self.label}")
        if self.source:
            parts.append(f"source = {self.source}")
        if self.min_confidence is not None or self.max_confidence is not None:
            lo, hi = self.min_confidence or 0.0, 1.0 if self.max_confidence is None else self.max_confidence
            parts.append(f"confidence {lo:.0%}–{hi:.0%}")
        if self.disagreement:
            parts.append(f"disagreement: {self.disagreement.replace('_', ' ')}")
        if self.reviewer:
            parts.append(f"decided by {self.reviewer}")
        if self.status:
            parts.append(f"status {self.status.replace('_', ' ')}")
        if self.eval_slice is not None:
            parts.append("evaluation slice" if self.eval_slice else "not in the evaluation slice")
        return "; ".join(parts) or "all products"


@dataclass
class FilterOptions:
    """The values the filters can take right now (for the page's pickers)."""

    labels: list[str]
    sources: list[str]
    reviewers: list[str]


# Each product with its latest prediction (if any) and its effective label (the views' rule).
_FROM = """
FROM products p
LEFT JOIN (SELECT product_id, MAX(id) AS id FROM predictions GROUP BY product_id) latest ON latest.product_id = p.id
LEFT JOIN predictions pred ON pred.id = latest.id
JOIN effective_labels e ON e.product_id = p.id
"""
_HAS = "EXISTS (SELECT 1 FROM live_reviews r WHERE r.product_id = p.id AND {condition})"
_STATUS_SQL = f"""CASE WHEN e.decision = 'out_of_scope' THEN 'out_of_scope'
     WHEN e.review_id IS NOT NULL THEN 'decided'
     WHEN {_HAS.format(condition="r.decision = 'skip'")} THEN 'skipped'
     ELSE 'unreviewed' END"""
_SELECT = f"""
SELECT p.id AS product_id, p.external_id, p.text, p.source, COALESCE(p.split = 'eval', 0) AS eval_slice,
       p.true_label AS catalogue_label, pred.label AS predicted_label, pred.confidence, pred.text_label,
       pred.image_label, pred.disagree, pred.model_version, pred.created_at AS predicted_at,
       e.label, e.label_source, e.reviewer, e.reviewed_at, {_STATUS_SQL} AS status,
       (SELECT COUNT(*) FROM live_reviews r WHERE r.product_id = p.id AND r.decision = '{SUGGEST}') AS suggestions,
       p.image_hash
"""


def nullable_ints(frame: pd.DataFrame) -> pd.DataFrame:
    """Id columns as whole numbers with gaps (pandas would make 3 → 3.0 next to a missing one)."""
    for column in frame.columns:
        if column == "id" or column.endswith("_id") or column in ("replaces", "count"):
            frame[column] = frame[column].astype("Int64")
    return frame


def _check(filters: BrowseFilters) -> None:
    """Bad filter values are the caller's mistake: say which one."""
    if filters.label_kind not in LABEL_KINDS:
        raise InputError(f"unknown label kind '{filters.label_kind}'; choose one of {', '.join(LABEL_KINDS)}")
    if filters.status is not None and filters.status not in STATUSES:
        raise InputError(f"unknown status '{filters.status}'; choose one of {', '.join(STATUSES)}")
    if filters.disagreement is not None and filters.disagreement not in DISAGREEMENTS:
        raise InputError(f"unknown disagreement '{filters.disagreement}'; choose one of {', '.join(DISAGREEMENTS)}")
    if filters.order not in ORDERS:
        raise InputError(f"unknown order '{filters.order}'; choose one of {', '.join(ORDERS)}")
    for name in ("min_confidence", "max_confidence"):
        value = getattr(filters, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise InputError(f"{name.replace('_', ' ')} must be between 0 and 1, got {value}")
    if (filters.min_confidence is not None and filters.max_confidence is not None
            and filters.min_confidence > filters.max_confidence):
        raise InputError("the lowest confidence is above the highest")
    if not 1 <= int(filters.limit) <= MAX_LIMIT:
        raise InputError(f"show 1 to {MAX_LIMIT} products at a time, not {filters.limit}")
    if int(filters.offset) < 0:
        raise InputError("the page offset cannot be negative")


def _like(value: str) -> str:
    """A LIKE pattern matching `value` anywhere, with % and _ taken literally."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(filters: BrowseFilters) -> tuple[str, dict]:
    """The WHERE clause and parameters of `filters` over `_FROM`."""
    _check(filters)
    clauses: list[str] = []
    params: dict = {}
    if filters.text.strip():
        # LIKE folds ASCII case; fold the rest (é/É, ß) in Python before comparing
        clauses.append("(fold(p.text) LIKE :text ESCAPE '\\' OR fold(p.external_id) LIKE :text ESCAPE '\\')")
        params["text"] = _like(filters.text.strip().casefold())
    if filters.label:
        params["label"] = filters.label
        clauses.append({
            "effective": "e.label = :label",
            "catalogue": "p.true_label = :label",
            "predicted": "pred.label = :label",
            "reviewed": "e.label_source = 'reviewer' AND e.label = :label",
            "any": "(e.label = :label OR p.true_label = :label OR pred.label = :label)",
        }[filters.label_kind])
    if filters.source:
        clauses.append("p.source = :source")
        params["source"] = filters.source
    if filters.min_confidence is not None:
        clauses.append("pred.confidence >= :min_confidence")
        params["min_confidence"] = float(filters.min_confidence)
    if filters.max_confidence is not None:
        clauses.append("pred.confidence <= :max_confidence")
        params["max_confidence"] = float(filters.max_confidence)
    if filters.disagreement:
        text_image = "pred.disagree = 1"
        catalogue_predicted = "(p.true_label IS NOT NULL AND pred.label IS NOT NULL AND p.true_label != pred.label)"
        clauses.append({"text_vs_image": text_image, "catalogue_vs_predicted": catalogue_predicted,
                        "any": f"({text_image} OR {catalogue_predicted})"}[filters.disagreement])
    if filters.reviewer:
        clauses.append(_HAS.format(condition="r.reviewer = :reviewer AND r.decision != :suggest"))
        params.update(reviewer=filters.reviewer, suggest=SUGGEST)
    if filters.status == "suggested":
        clauses.append(_HAS.format(condition=f"r.decision = '{SUGGEST}'"))
    elif filters.status == "unreviewed":
        clauses.append("e.review_id IS NULL")  # nobody settled it (skips and suggestions do not settle)
    elif filters.status:
        clauses.append(f"({_STATUS_SQL}) = :status")
        params["status"] = filters.status
    if filters.eval_slice is not None:
        clauses.append("p.split = 'eval'" if filters.eval_slice else "COALESCE(p.split, '') != 'eval'")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _query(store: Store, sql: str, params: dict) -> list[dict]:
    """Run with `fold()` (Unicode case folding) available to the SQL."""
    with store.read() as db:
        db.conn.create_function("fold", 1, lambda s: s.casefold() if isinstance(s, str) else s, deterministic=True)
        return [dict(row) for row in db.execute(sql, params).fetchall()]


def count_products(store: Store, user: User, filters: BrowseFilters) -> int:
    """How many products match `filters` (all pages)."""
    require(user, "monitor")
    where, params = _where(filters)
    return int(_query(store, f"SELECT COUNT(*) AS n {_FROM}{where}", params)[0]["n"])


def search_products(store: Store, user: User, filters: BrowseFilters) -> pd.DataFrame:
    """One page (`limit` rows from `offset`) of the products matching `filters`, with their
    latest prediction and effective label; `frame.attrs["total"]` is the count over all pages."""
    require(user, "monitor")
    where, params = _where(filters)
    rows = _query(store, f"{_SELECT} {_FROM}{where} ORDER BY {ORDERS[filters.order]} LIMIT :limit OFFSET :offset",
                  {**params, "limit": int(filters.limit), "offset": int(filters.offset)})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["eval_slice"] = frame["eval_slice"].astype(bool)
    frame["disagree"] = frame["disagree"].map(lambda v: None if pd.isna(v) else bool(v)).astype(object)
    frame.attrs["total"] = int(_query(store, f"SELECT COUNT(*) AS n {_FROM}{where}", params)[0]["n"])
    return frame


def matching_ids(store: Store, user: User, filters: BrowseFilters) -> list[int]:
    """Every product id matching `filters`, whatever the page (a bulk action's selection)."""
    require(user, "monitor")
    where, params = _where(filters)
    return [r["id"] for r in _query(store, f"SELECT p.id {_FROM}{where} ORDER BY p.id", params)]


def filter_options(store: Store, user: User) -> FilterOptions:
    """Labels (from the catalogue, the predictions and the decisions), sources and reviewers."""
    require(user, "monitor")
    labels = store.query("SELECT true_label AS v FROM products WHERE true_label IS NOT NULL "
                         "UNION SELECT label FROM predictions UNION SELECT new_label FROM live_reviews "
                         "WHERE new_label IS NOT NULL ORDER BY v")
    sources = store.query("SELECT DISTINCT source AS v FROM products WHERE source IS NOT NULL ORDER BY v")
    reviewers = store.query("SELECT DISTINCT reviewer AS v FROM live_reviews WHERE decision != ? ORDER BY v",
                            [SUGGEST])
    return FilterOptions([r["v"] for r in labels], [r["v"] for r in sources], [r["v"] for r in reviewers])


# --------------------------------------------------------------------------- one product


@dataclass
class ProductHistory:
    """Everything known about one product, oldest first within each part."""

    product: dict  # the products row + label, label_source, status, image_path (None without a photo)
    predictions: pd.DataFrame  # one row per prediction: version, label, confidence, who, when
    decisions: pd.DataFrame  # every decision, undone ones too (revoked_at / revoked_by set)
    suggestions: pd.DataFrame  # viewers' suggestions
    bulk_actions: pd.DataFrame  # bulk actions that decided this product (and whether they were undone)
    top: list[tuple[str, float]] = field(default_factory=list)  # the latest prediction's top classes


PREDICTION_COLUMNS = ["prediction_id", "created_at", "model_version", "label", "confidence", "margin",
                      "text_label", "image_label", "disagree", "user"]
DECISION_COLUMNS = ["review_id", "created_at", "reviewer", "decision", "old_label", "new_label", "note",
                    "model_version", "bulk_id", "replaces", "revoked_at", "revoked_by"]
SUGGESTION_COLUMNS = ["review_id", "created_at", "reviewer", "old_label", "new_label", "note", "revoked_at"]
BULK_COLUMNS = ["bulk_id", "created_at", "user", "filter", "threshold", "count", "undone_at", "undone_by"]


def product_history(store: Store, user: User, product_id: int) -> ProductHistory:
    """The product, every prediction by model version, every decision (undone ones too),
    viewers' suggestions and the bulk actions that touched it."""
    require(user, "monitor")
    from core.studio.uploads import image_path

    product = store.one(f"""SELECT p.*, e.label, e.label_source, e.reviewer, e.reviewed_at, {_STATUS_SQL} AS status
                            FROM products p JOIN effective_labels e ON e.product_id = p.id WHERE p.id = ?""",
                        [int(product_id)])
    if product is None:
        raise NotFound(f"no product {product_id}")
    product["image_path"] = image_path(product["image_hash"]) if product["image_hash"] else None
    predictions = store.query(f"SELECT id AS prediction_id, {', '.join(PREDICTION_COLUMNS[1:])}, labels, fused "
                              "FROM predictions WHERE product_id = ? ORDER BY id", [product_id])
    top: list[tuple[str, float]] = []
    if predictions:
        labels, fused = from_json(predictions[-1]["labels"]), from_json(predictions[-1]["fused"])
        top = sorted(zip(labels, map(float, fused)), key=lambda pair: -pair[1])[:3]
    reviews = store.query("SELECT id AS review_id, * FROM reviews WHERE product_id = ? ORDER BY id", [product_id])
    decisions = [r for r in reviews if r["decision"] != SUGGEST]
    suggestions = [r for r in reviews if r["decision"] == SUGGEST]
    bulk = store.query("""SELECT b.id AS bulk_id, b.* FROM bulk_actions b
                          WHERE b.id IN (SELECT bulk_id FROM reviews WHERE product_id = ? AND bulk_id IS NOT NULL)
                          ORDER BY b.id""", [product_id])
    frame = lambda rows, columns: nullable_ints(pd.DataFrame(rows, columns=columns))  # noqa: E731
    return ProductHistory(product, frame(predictions, PREDICTION_COLUMNS), frame(decisions, DECISION_COLUMNS),
                          frame(suggestions, SUGGESTION_COLUMNS), frame(bulk, BULK_COLUMNS), top)

