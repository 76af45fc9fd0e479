"""The labelling queue: scored products nobody has accepted or corrected yet, hardest
first, one at a time per reviewer.

A reviewer *claims* the item they are shown (with an expiry), inside the same write
transaction that picks it, so two reviewers never get the same item; a claim left behind
by a closed browser simply expires. A skip hides the item from that reviewer only. The
decision and the release of the claim land together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from core.auth import User, require
from core.errors import InputError
from core.store import DECISIONS, Store, from_json, utc_now
from core.uploads import image_path

CLAIM_SECONDS = 10 * 60

# Queue orders a reviewer can pick: name → SQL ORDER BY over the latest prediction `p`.
ORDERS: dict[str, str] = {
    "least confidence": "p.confidence ASC, p.margin ASC, p.id ASC",
    "smallest margin": "p.margin ASC, p.confidence ASC, p.id ASC",
    "text–image disagreement": "p.disagree DESC, p.confidence ASC, p.id ASC",
}
DEFAULT_ORDER = "least confidence"

# Products with a prediction and no accept/correct decision, each with its latest prediction,
# minus those this reviewer skipped ...
_OPEN = """
FROM predictions p
JOIN (SELECT product_id, MAX(id) AS id FROM predictions GROUP BY product_id) latest ON latest.id = p.id
JOIN products pr ON pr.id = p.product_id
WHERE NOT EXISTS (SELECT 1 FROM reviews r WHERE r.product_id = p.product_id
                  AND (r.decision IN ('accept', 'correct') OR (r.decision = 'skip' AND r.reviewer = :user)))
"""
# ... and those another reviewer holds right now.
_PENDING = _OPEN + """
  AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.product_id = p.product_id AND c.user != :user
                  AND c.expires_at > :now)
"""


@dataclass
class QueueItem:
    product_id: int
    prediction_id: int
    text: str
    image_path: Path | None
    model_version: str
    labels: list[str]
    fused: list[float]
    text_probs: list[float] | None
    image_probs: list[float] | None
    label: str
    confidence: float
    margin: float
    disagree: bool
    source: str | None = None
    claim_expires_at: float = 0.0
    extra: dict = field(default_factory=dict)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = sorted(range(len(self.fused)), key=lambda i: -self.fused[i])[:k]
        return [(self.labels[i], float(self.fused[i])) for i in order]


def _item(row: dict, expires_at: float) -> QueueItem:
    return QueueItem(
        product_id=row["product_id"], prediction_id=row["id"], text=row["text"] or "",
        image_path=image_path(row["image_hash"]) if row["image_hash"] else None,
        model_version=row["model_version"], labels=from_json(row["labels"]), fused=from_json(row["fused"]),
        text_probs=from_json(row["text_probs"]), image_probs=from_json(row["image_probs"]), label=row["label"],
        confidence=row["confidence"], margin=row["margin"], disagree=bool(row["disagree"]), source=row["source"],
        claim_expires_at=expires_at)


def pending_count(store: Store, user: User | None = None) -> int:
    """Items left for `user` (everyone's open items when None, claimed ones included)."""
    row = store.one(f"SELECT COUNT(*) AS n {_PENDING if user else _OPEN}",
                    {"user": user.username if user else "", "now": time.time()})
    return int(row["n"]) if row else 0


def claim_next(store: Store, user: User, order: str = DEFAULT_ORDER, *, ttl: float = CLAIM_SECONDS) -> QueueItem | None:
    """The reviewer's current item (kept across page reloads) or the next one by `order`,
    claimed for `ttl` seconds. None when the queue is empty for them."""
    require(user, "review")
    if order not in ORDERS:
        raise InputError(f"unknown queue order '{order}'; choose one of {', '.join(ORDERS)}")
    now = time.time()
    params = {"user": user.username, "now": now}
    columns = "p.*, pr.text, pr.image_hash, pr.source"
    with store.transaction() as db:
        db.execute("DELETE FROM claims WHERE expires_at <= ?", [now])
        mine = "AND EXISTS (SELECT 1 FROM claims c WHERE c.product_id = p.product_id AND c.user = :user)"
        row = db.execute(f"SELECT {columns} {_PENDING} {mine} ORDER BY {ORDERS[order]} LIMIT 1", params).fetchone()
        if row is None:
            row = db.execute(f"SELECT {columns} {_PENDING} ORDER BY {ORDERS[order]} LIMIT 1", params).fetchone()
        if row is None:
            return None
        row = dict(row)
        db.execute("DELETE FROM claims WHERE user = ? AND product_id != ?", [user.username, row["product_id"]])
        db["claims"].upsert({"product_id": row["product_id"], "user": user.username, "expires_at": now + ttl},
                            pk="product_id")
    return _item(row, now + ttl)


def release(store: Store, user: User, product_id: int | None = None) -> None:
    """Give back a claim (all of the user's when `product_id` is None)."""
    with store.transaction() as db:
        if product_id is None:
            db.execute("DELETE FROM claims WHERE user = ?", [user.username])
        else:
            db.execute("DELETE FROM claims WHERE user = ? AND product_id = ?", [user.username, product_id])


def record_review(store: Store, user: User, product_id: int, decision: str, *, new_label: str | None = None,
                  prediction_id: int | None = None, note: str | None = None, action: str = "review") -> int:
    """Save a reviewer's decision on a product (accept the predicted label, correct it to
    `new_label`, or skip). Returns the review id. `action` is the permission needed:
    "review" in the queue, "predict" for feedback on one's own prediction."""
    require(user, action)
    if decision not in DECISIONS:
        raise InputError(f"unknown decision '{decision}'; one of {', '.join(DECISIONS)}")
    with store.transaction() as db:
        if prediction_id is None:
            found = db.execute("SELECT id FROM predictions WHERE product_id = ? ORDER BY id DESC LIMIT 1",
                               [product_id]).fetchone()
            prediction_id = found[0] if found else None
        pred = db.execute("SELECT label, labels, model_version, product_id FROM predictions WHERE id = ?",
                          [prediction_id]).fetchone() if prediction_id is not None else None
        if pred is None or pred["product_id"] != product_id:
            if db.execute("SELECT 1 FROM products WHERE id = ?", [product_id]).fetchone() is None:
                raise InputError(f"no product {product_id}")
            raise InputError(f"product {product_id} has no prediction to review")
        old_label = pred["label"]
        if decision == "correct":
            known = from_json(pred["labels"])
            new_label = (new_label or "").strip()
            if not new_label:
                raise InputError("pick the right category to correct the label")
            if new_label not in known:
                raise InputError(f"'{new_label}' is not a category of this model")
        elif decision == "accept":
            new_label = old_label
        else:
            new_label = None
        review_id = db["reviews"].insert({
            "product_id": product_id, "prediction_id": prediction_id, "reviewer": user.username,
            "decision": decision, "old_label": old_label, "new_label": new_label, "note": (note or "").strip() or None,
            "model_version": pred["model_version"], "created_at": utc_now()}).last_pk
        db.execute("DELETE FROM claims WHERE product_id = ? AND user = ?", [product_id, user.username])
    return review_id


def record_feedback(store: Store, user: User, product_id: int, *, correct_label: str | None = None,
                    prediction_id: int | None = None) -> int:
    """The Predict page's "correct?": accept (no label) or correct to `correct_label`,
    for a product this user scored."""
    owner = store.one("SELECT created_by FROM products WHERE id = ?", [product_id])
    if owner is None:
        raise InputError(f"no product {product_id}")
    if owner["created_by"] != user.username and not user.can("review"):
        raise InputError("you can only give feedback on products you scored")
    decision = "correct" if correct_label else "accept"
    return record_review(store, user, product_id, decision, new_label=correct_label, prediction_id=prediction_id,
                         action="predict")


def reviews_of(store: Store, product_id: int) -> list[dict]:
    return store.query("SELECT * FROM reviews WHERE product_id = ? ORDER BY id", [product_id])
