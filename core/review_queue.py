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
from core.store import DECISIONS, Store, from_json, to_json, utc_now
from core.uploads import image_path

CLAIM_SECONDS = 10 * 60

# Queue orders a reviewer can pick: name → SQL ORDER BY over the latest prediction `p`.
ORDERS: dict[str, str] = {
    "least confidence": "p.confidence ASC, p.margin ASC, p.id ASC",
    "smallest margin": "p.margin ASC, p.confidence ASC, p.id ASC",
    "text–image disagreement": "p.disagree DESC, p.confidence ASC, p.id ASC",
}
DEFAULT_ORDER = "least confidence"
SUSPECTS = "suspected mislabels"  # catalogue items whose label confident learning doubts (core.suspects)

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
_NOT_HELD = """
  AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.product_id = {key} AND c.user != :user AND c.expires_at > :now)
"""
_PENDING = _OPEN + _NOT_HELD.format(key="p.product_id")

# Flagged catalogue items nobody decided since the suspects run (or this reviewer skipped).
_SUSPECTS_OPEN = """
FROM suspects s
JOIN products pr ON pr.id = s.product_id
WHERE s.flagged = 1
  AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.product_id = s.product_id AND r.created_at >= s.created_at
                  AND (r.decision IN ('accept', 'correct') OR (r.decision = 'skip' AND r.reviewer = :user)))
"""
_SUSPECTS_PENDING = _SUSPECTS_OPEN + _NOT_HELD.format(key="s.product_id")


@dataclass
class QueueItem:
    product_id: int
    prediction_id: int | None  # None for a suspected mislabel (the catalogue's label is reviewed)
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


def _suspect_item(row: dict, expires_at: float) -> QueueItem:
    probs = from_json(row["probs"])
    labels = from_json(row["labels"])
    given = row["given_label"]
    return QueueItem(
        product_id=row["product_id"], prediction_id=None, text=row["text"] or "",
        image_path=image_path(row["image_hash"]) if row["image_hash"] else None, model_version="suspects",
        labels=labels, fused=probs, text_probs=None, image_probs=None, label=given,
        confidence=probs[labels.index(given)] if given in labels else 0.0, margin=0.0, disagree=False,
        source=row["source"], claim_expires_at=expires_at,
        extra={"suspect_score": row["score"], "suggested_label": row["suggested_label"]})


def pending_count(store: Store, user: User | None = None, order: str = DEFAULT_ORDER) -> int:
    """Items left for `user` (everyone's open items when None, claimed ones included)."""
    if order == SUSPECTS:
        sql = _SUSPECTS_PENDING if user else _SUSPECTS_OPEN
    else:
        sql = _PENDING if user else _OPEN
    row = store.one(f"SELECT COUNT(*) AS n {sql}", {"user": user.username if user else "", "now": time.time()})
    return int(row["n"]) if row else 0


def claim_next(store: Store, user: User, order: str = DEFAULT_ORDER, *, ttl: float = CLAIM_SECONDS) -> QueueItem | None:
    """The reviewer's current item (kept across page reloads) or the next one by `order`,
    claimed for `ttl` seconds. None when the queue is empty for them."""
    require(user, "review")
    if order == SUSPECTS:
        columns, pending, key, order_by, build = ("s.*, pr.text, pr.image_hash, pr.source", _SUSPECTS_PENDING,
                                                  "s.product_id", "s.score DESC, s.product_id ASC", _suspect_item)
    elif order in ORDERS:
        columns, pending, key, order_by, build = ("p.*, pr.text, pr.image_hash, pr.source", _PENDING,
                                                  "p.product_id", ORDERS[order], _item)
    else:
        raise InputError(f"unknown queue order '{order}'; choose one of {', '.join([*ORDERS, SUSPECTS])}")
    now = time.time()
    params = {"user": user.username, "now": now}
    with store.transaction() as db:
        db.execute("DELETE FROM claims WHERE expires_at <= ?", [now])
        mine = f"AND EXISTS (SELECT 1 FROM claims c WHERE c.product_id = {key} AND c.user = :user)"
        row = db.execute(f"SELECT {columns} {pending} {mine} ORDER BY {order_by} LIMIT 1", params).fetchone()
        if row is None:
            row = db.execute(f"SELECT {columns} {pending} ORDER BY {order_by} LIMIT 1", params).fetchone()
        if row is None:
            return None
        row = dict(row)
        db.execute("DELETE FROM claims WHERE user = ? AND product_id != ?", [user.username, row["product_id"]])
        db["claims"].upsert({"product_id": row["product_id"], "user": user.username, "expires_at": now + ttl},
                            pk="product_id")
    return build(row, now + ttl)


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
        if pred is not None and pred["product_id"] != product_id:
            raise InputError(f"prediction {prediction_id} is not of product {product_id}")
        if pred is None:
            pred = _catalogue_label(db, product_id)  # a catalogue item: its own label is what is reviewed
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


def _catalogue_label(db, product_id: int) -> dict:
    """A product with no prediction (an imported catalogue item): its current label (the
    latest decision, else the catalogue's) and the categories it may be corrected to."""
    row = db.execute("SELECT true_label FROM products WHERE id = ?", [product_id]).fetchone()
    if row is None:
        raise InputError(f"no product {product_id}")
    last = db.execute("SELECT new_label FROM reviews WHERE product_id = ? AND decision IN ('accept', 'correct') "
                      "ORDER BY id DESC LIMIT 1", [product_id]).fetchone()
    label = last[0] if last else row[0]
    if label is None:
        raise InputError(f"product {product_id} has neither a prediction nor a label to review")
    known = [r[0] for r in db.execute("SELECT DISTINCT true_label FROM products WHERE true_label IS NOT NULL "
                                      "UNION SELECT DISTINCT new_label FROM reviews WHERE new_label IS NOT NULL")]
    return {"label": label, "labels": to_json(sorted(known)), "model_version": None}


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
