"""Bulk with care: accept, in one go, every undecided product of a selection whose latest
prediction is confident enough — previewed first, audited, and undoable.

A bulk accept is one `bulk_actions` row plus one ordinary `reviews` row per product (with
`bulk_id` set), so training, the queue and the export treat them like any decision.
Undoing it marks those decisions undone, but only where they are still the product's
settled decision: a reviewer who decided a product after the bulk action keeps their
decision.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from core.common.errors import InputError
from core.studio.auth import User, require, require_current
from core.studio.review_queue import insert_decision
from core.studio.store import Store, utc_now

# Undecided products of the selection (json_each: one parameter whatever the selection's
# size) with their latest prediction at or above the threshold.
_ELIGIBLE = """
SELECT pred.product_id, pred.id AS prediction_id, pred.label, pred.confidence
FROM predictions pred
JOIN (SELECT product_id, MAX(id) AS id FROM predictions
      WHERE product_id IN (SELECT value FROM json_each(:ids)) GROUP BY product_id) latest ON latest.id = pred.id
LEFT JOIN settled s ON s.product_id = pred.product_id  -- a join, not NOT EXISTS: the view is built once
WHERE pred.confidence >= :threshold AND s.id IS NULL
ORDER BY pred.product_id
"""


@dataclass
class BulkPreview:
    """What a bulk accept of this selection would do, before it is done."""

    threshold: float
    selected: int  # products in the selection
    product_ids: list[int]  # those that would be accepted
    per_class: dict[str, int] = field(default_factory=dict)  # how many of them per predicted class

    @property
    def count(self) -> int:
        return len(self.product_ids)


@dataclass
class BulkAction:
    id: int
    user: str
    action: str
    filter: str | None
    threshold: float | None
    count: int
    created_at: str
    undone_at: str | None
    undone_by: str | None


@dataclass
class BulkUndo:
    bulk_id: int
    undone: int  # decisions marked undone
    kept: int  # products someone decided after the bulk action: their decision stands


def _check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"the confidence threshold must be a number between 0 and 1, got {threshold!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"the confidence threshold must be between 0 and 1, got {value}")
    return value


def _ids(product_ids) -> str:
    return json.dumps(sorted({int(i) for i in product_ids}))


def _eligible(db, product_ids, threshold: float) -> list[dict]:
    return [dict(r) for r in db.execute(_ELIGIBLE, {"ids": _ids(product_ids), "threshold": threshold}).fetchall()]


def _per_class(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def preview_bulk_accept(store: Store, user: User, product_ids, threshold: float) -> BulkPreview:
    """Which products of `product_ids` a bulk accept at `threshold` would accept: those
    nobody settled yet whose latest prediction's confidence is ≥ threshold."""
    require(user, "review")
    threshold = _check_threshold(threshold)
    with store.read() as db:
        rows = _eligible(db, product_ids, threshold)
    return BulkPreview(threshold, len(set(product_ids)), [r["product_id"] for r in rows], _per_class(rows))


def bulk_accept(store: Store, user: User, product_ids, threshold: float, filter_description: str = "") -> int:
    """Accept the predicted label of every product `preview_bulk_accept` names, as one
    audited bulk action in one transaction; products decided meanwhile are left alone.
    Returns the bulk action's id."""
    user = require_current(store, user, "review")
    threshold = _check_threshold(threshold)
    with store.transaction() as db:
        rows = _eligible(db, product_ids, threshold)
        if not rows:
            raise InputError(f"no undecided product in the selection has a confidence of {threshold:.0%} or more; "
                             "nothing was accepted")
        bulk_id = db["bulk_actions"].insert({
            "user": user.username, "action": "accept", "filter": (filter_description or "").strip() or None,
            "threshold": threshold, "count": len(rows), "created_at": utc_now()}).last_pk
        for row in rows:
            insert_decision(db, user, row["product_id"], "accept", new_label=None,
                             prediction_id=row["prediction_id"], note=None, bulk_id=bulk_id)
        # whoever holds one of these in their queue is told "someone decided meanwhile" on saving
        db.execute("DELETE FROM claims WHERE product_id IN (SELECT value FROM json_each(?))",
                   [_ids(r["product_id"] for r in rows)])
        store.audit(user.username, "bulk.accept", {"bulk_id": bulk_id, "count": len(rows), "threshold": threshold,
                                                   "filter": filter_description, "per_class": _per_class(rows)},
                    db=db)
    return bulk_id


def get_bulk(store: Store, user: User, bulk_id: int) -> BulkAction:
    require(user, "review")
    row = store.one("SELECT * FROM bulk_actions WHERE id = ?", [int(bulk_id)])
    if row is None:
        raise InputError(f"no bulk action {bulk_id}")
    return BulkAction(**row)


def undo_bulk(store: Store, user: User, bulk_id: int) -> BulkUndo:
    """Mark the bulk action's decisions undone where they are still the product's settled
    decision (a later decision by anyone is never touched). Its author or an admin may."""
    user = require_current(store, user, "review")
    with store.transaction() as db:
        row = db.execute("SELECT * FROM bulk_actions WHERE id = ?", [int(bulk_id)]).fetchone()
        if row is None:
            raise InputError(f"no bulk action {bulk_id}")
        if row["undone_at"] is not None:
            raise InputError(f"bulk action {bulk_id} was undone already ({row['undone_at']} by {row['undone_by']})")
        if row["user"] != user.username and not user.can("users"):
            raise InputError(f"only {row['user']} or an admin can undo bulk action {bulk_id}")
        now = utc_now()
        undone = db.execute("""UPDATE reviews SET revoked_at = :now, revoked_by = :user
                               WHERE bulk_id = :bulk AND revoked_at IS NULL AND id IN (SELECT id FROM settled)""",
                            {"now": now, "user": user.username, "bulk": int(bulk_id)}).rowcount
        kept = db.execute("SELECT COUNT(*) FROM live_reviews WHERE bulk_id = ?",
                          [int(bulk_id)]).fetchone()[0]
        db.execute("UPDATE bulk_actions SET undone_at = ?, undone_by = ? WHERE id = ?", [now, user.username, bulk_id])
        store.audit(user.username, "bulk.undo", {"bulk_id": int(bulk_id), "undone": undone, "kept": kept}, db=db)
    return BulkUndo(int(bulk_id), undone, kept)
