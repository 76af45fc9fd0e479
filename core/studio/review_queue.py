"""The labelling queue: scored products nobody has settled yet, hardest first, one at a
time per reviewer — and the decisions reviewers make on them.

A reviewer *claims* the item they are shown (with an expiry), inside the same write
transaction that picks it, so two reviewers never get the same item; a claim left behind
by a closed browser simply expires. The item remembers the newest decision that existed
when it was shown (`seen_review_id`): a decision is saved only while the reviewer still
holds the claim, or when nobody decided since — a late click never overwrites a newer
decision. A skipped item comes back after every other item. Decisions can be undone and
changed; nothing is deleted (an undone decision keeps its row, with who undid it when).

Viewers do not decide: their feedback on Predict is a *suggestion*, shown to reviewers and
never trained on (`record_feedback` picks this from the user's role, not from its caller).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.common.category_path import category_choices
from core.common.errors import InputError, NotFound
from core.studio.auth import User, require, require_current
from core.studio.store import (DECISIONS, DECISIONS_SQL, SETTLING, SETTLING_SQL, SUGGEST, Store, from_json,
                                settled_decision, to_json, utc_now)
from core.studio.uploads import image_path

CLAIM_SECONDS = 10 * 60
LOW_CONFIDENCE = 0.5  # below this a prediction is flagged as a guess, as clearly as a disagreement

# Queue orders by identifier (the HTTP API and the page use the same names) → SQL over the
# latest prediction `p`; the labels are what the page shows.
ORDERS: dict[str, str] = {
    "least_confidence": "p.confidence ASC, p.margin ASC, p.id ASC",
    "margin": "p.margin ASC, p.confidence ASC, p.id ASC",
    "disagreement": "p.disagree DESC, p.confidence ASC, p.id ASC",
}
SUSPECTS = "suspects"  # catalogue items whose label confident learning doubts (core.training.suspects)
ORDER_LABELS: dict[str, str] = {
    "least_confidence": "Least confidence",
    "margin": "Smallest margin",
    "disagreement": "Text–image disagreement",
    SUSPECTS: "Suspected mislabels",
}
DEFAULT_ORDER = "least_confidence"

# Products with a prediction and no settled decision, each with its latest prediction ...
_OPEN = """
FROM predictions p
JOIN (SELECT product_id, MAX(id) AS id FROM predictions GROUP BY product_id) latest ON latest.id = p.id
JOIN products pr ON pr.id = p.product_id
WHERE NOT EXISTS (SELECT 1 FROM settled s WHERE s.product_id = p.product_id)
"""
# ... minus those another reviewer holds right now.
_NOT_HELD = """
  AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.product_id = {key} AND c.user != :user AND c.expires_at > :now)
"""
_PENDING = _OPEN + _NOT_HELD.format(key="p.product_id")
_SKIPPED = ("EXISTS (SELECT 1 FROM live_reviews r WHERE r.product_id = {key} AND r.decision = 'skip' "
            "AND r.reviewer = :user{since})")

# Flagged catalogue items nobody decided since the suspects run.
_SUSPECTS_OPEN = f"""
FROM suspects s
JOIN products pr ON pr.id = s.product_id
WHERE s.flagged = 1
  AND NOT EXISTS (SELECT 1 FROM live_reviews r WHERE r.product_id = s.product_id AND r.created_at >= s.created_at
                  AND r.decision IN {SETTLING_SQL})
"""
_SUSPECTS_PENDING = _SUSPECTS_OPEN + _NOT_HELD.format(key="s.product_id")


class DecisionConflict(InputError):
    """Someone decided this product after it was shown to this reviewer: nothing was written."""


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
    seen_review_id: int = 0  # the newest decision on this product when it was shown
    skipped: bool = False  # this reviewer skipped it before (it came back after the others)
    suggestions: list[dict] = field(default_factory=list)  # viewers' suggestions: reviewer, new_label, note
    text_label: str | None = None
    image_label: str | None = None
    extra: dict = field(default_factory=dict)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        order = sorted(range(len(self.fused)), key=lambda i: -self.fused[i])[:k]
        return [(self.labels[i], float(self.fused[i])) for i in order]

    @property
    def low_confidence(self) -> bool:
        return self.confidence < LOW_CONFIDENCE


def _item(row: dict, expires_at: float) -> QueueItem:
    return QueueItem(
        product_id=row["product_id"], prediction_id=row["id"], text=row["text"] or "",
        image_path=image_path(row["image_hash"]) if row["image_hash"] else None,
        model_version=row["model_version"], labels=from_json(row["labels"]), fused=from_json(row["fused"]),
        text_probs=from_json(row["text_probs"]), image_probs=from_json(row["image_probs"]), label=row["label"],
        confidence=row["confidence"], margin=row["margin"], disagree=bool(row["disagree"]), source=row["source"],
        claim_expires_at=expires_at, skipped=bool(row["skipped"]), text_label=row["text_label"],
        image_label=row["image_label"])


def _suspect_item(row: dict, expires_at: float) -> QueueItem:
    probs = from_json(row["probs"])
    labels = from_json(row["labels"])
    given = row["given_label"]
    return QueueItem(
        product_id=row["product_id"], prediction_id=None, text=row["text"] or "",
        image_path=image_path(row["image_hash"]) if row["image_hash"] else None, model_version="suspects",
        labels=labels, fused=probs, text_probs=None, image_probs=None, label=given,
        confidence=probs[labels.index(given)] if given in labels else 0.0, margin=0.0,
        disagree=bool(row["text_label"] and row["image_label"] and row["text_label"] != row["image_label"]),
        text_label=row["text_label"], image_label=row["image_label"],
        source=row["source"], claim_expires_at=expires_at, skipped=bool(row["skipped"]),
        extra={"suspect_score": row["score"], "suggested_label": row["suggested_label"]})


LEVEL_ORDER = "least_confidence@"  # + a tree level: "least_confidence@2" orders by level 2's confidence


def level_order(level: int) -> str:
    """The queue order "least confident at this level of the category tree"."""
    return f"{LEVEL_ORDER}{int(level)}"


def _order_sql(order: str) -> str:
    """ORDERS[order], or for a level order the stored confidence of that level (a flat
    model's rows, which have none, fall back to their confidence)."""
    if order.startswith(LEVEL_ORDER):
        k = int(order[len(LEVEL_ORDER):]) - 1
        return (f"COALESCE(json_extract(p.level_confidences, '$[{k}]'), p.confidence) ASC, "
                "p.confidence ASC, p.id ASC")
    return ORDERS[order]


def _check_order(order: str) -> None:
    level = order[len(LEVEL_ORDER):] if order.startswith(LEVEL_ORDER) else None
    if level is not None and level.isdigit() and 1 <= int(level) <= 9:
        return
    if order != SUSPECTS and order not in ORDERS:
        raise InputError(f"unknown queue order '{order}'; choose one of {', '.join([*ORDERS, SUSPECTS])} "
                         f"or {LEVEL_ORDER}N (N: a category tree level)")


def pending_count(store: Store, user: User | None = None, order: str = DEFAULT_ORDER) -> int:
    """Items left for `user` (everyone's open items when None, claimed ones included);
    items the user skipped count: they come back after the others."""
    _check_order(order)
    if order == SUSPECTS:
        sql = _SUSPECTS_PENDING if user else _SUSPECTS_OPEN
    else:
        sql = _PENDING if user else _OPEN
    row = store.one(f"SELECT COUNT(*) AS n {sql}", {"user": user.username if user else "", "now": time.time()})
    return int(row["n"]) if row else 0


def suspects_ran(store: Store) -> bool:
    """Whether a label check ever ran (the suspects queue is empty until one does)."""
    return store.one("SELECT 1 AS x FROM suspects LIMIT 1") is not None


def claim_next(store: Store, user: User, order: str = DEFAULT_ORDER, *, ttl: float = CLAIM_SECONDS) -> QueueItem | None:
    """The reviewer's current item (kept across page reloads) or the next one by `order`
    (items they skipped last), claimed for `ttl` seconds. None when the queue is empty for them."""
    user = require_current(store, user, "review")
    _check_order(order)
    if order == SUSPECTS:
        key = "s.product_id"
        skipped = _SKIPPED.format(key=key, since=" AND r.created_at >= s.created_at")
        columns, pending, order_by, build = (f"s.*, pr.text, pr.image_hash, pr.source, {skipped} AS skipped",
                                             _SUSPECTS_PENDING, "s.score DESC, s.product_id ASC", _suspect_item)
    else:
        key = "p.product_id"
        skipped = _SKIPPED.format(key=key, since="")
        columns, pending, order_by, build = (f"p.*, pr.text, pr.image_hash, pr.source, {skipped} AS skipped",
                                             _PENDING, _order_sql(order), _item)
    now = time.time()
    params = {"user": user.username, "now": now}
    with store.transaction() as db:
        db.execute("DELETE FROM claims WHERE expires_at <= ?", [now])
        mine = f"AND EXISTS (SELECT 1 FROM claims c WHERE c.product_id = {key} AND c.user = :user)"
        row = db.execute(f"SELECT {columns} {pending} {mine} ORDER BY {order_by} LIMIT 1", params).fetchone()
        if row is None:
            row = db.execute(f"SELECT {columns} {pending} ORDER BY skipped ASC, {order_by} LIMIT 1", params).fetchone()
        if row is None:
            return None
        row = dict(row)
        product_id = row["product_id"]
        db.execute("DELETE FROM claims WHERE user = ? AND product_id != ?", [user.username, product_id])
        db["claims"].upsert({"product_id": product_id, "user": user.username, "expires_at": now + ttl},
                            pk="product_id")
        seen = settled_decision(db, product_id)
        suggestions = [dict(r) for r in db.execute(
            "SELECT reviewer, new_label, note, created_at FROM live_reviews WHERE product_id = ? AND decision = ? "
            "ORDER BY id", [product_id, SUGGEST])]
    item = build(row, now + ttl)
    item.seen_review_id = seen["id"] if seen is not None else 0
    item.suggestions = suggestions
    return item


def release(store: Store, user: User, product_id: int | None = None) -> None:
    """Give back a claim (all of the user's when `product_id` is None)."""
    with store.transaction() as db:
        if product_id is None:
            db.execute("DELETE FROM claims WHERE user = ?", [user.username])
        else:
            db.execute("DELETE FROM claims WHERE user = ? AND product_id = ?", [user.username, product_id])


def _check_not_overtaken(db, user: User, product_id: int, seen_review_id: int | None) -> None:
    """Refuse a decision made on a stale screen: the reviewer lost the claim and someone
    settled the product after it was shown."""
    if seen_review_id is None:
        return
    claim = db.execute("SELECT user, expires_at FROM claims WHERE product_id = ?", [product_id]).fetchone()
    if claim is not None and claim[0] == user.username and claim[1] > time.time():
        return
    newer = settled_decision(db, product_id)
    if newer is not None and newer["id"] > seen_review_id:
        raise DecisionConflict(f"someone decided meanwhile ({newer['reviewer']} decided product {product_id} "
                               "after it was shown to you); nothing was saved")


def _check_not_claimed(db, user: User, product_id: int) -> None:
    """Refuse a decision on a product another reviewer is looking at right now."""
    claim = db.execute("SELECT user, expires_at FROM claims WHERE product_id = ?", [product_id]).fetchone()
    if claim is not None and claim[0] != user.username and claim[1] > time.time():
        raise DecisionConflict(f"{claim[0]} is reviewing product {product_id} right now; nothing was saved")


def insert_decision(db, user: User, product_id: int, decision: str, *, new_label: str | None,
                     prediction_id: int | None, note: str | None, replaces: int | None = None,
                     bulk_id: int | None = None) -> int:
    """Check the decision against what the product was predicted as (or its catalogue
    label) and write it: the one place a review row is made."""
    if decision not in (*DECISIONS, SUGGEST):
        raise InputError(f"unknown decision '{decision}'; one of {', '.join(DECISIONS)}")
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
    if decision in ("correct", SUGGEST) and (new_label or decision == "correct"):
        known = from_json(pred["labels"])
        new_label = (new_label or "").strip()
        if not new_label:
            raise InputError("pick the right category to correct the label")
        if new_label not in category_choices(known):
            raise InputError(f"'{new_label}' is not a category of this model")
    elif decision in ("accept", SUGGEST):
        new_label = old_label
    else:
        new_label = None
    return db["reviews"].insert({
        "product_id": product_id, "prediction_id": prediction_id, "reviewer": user.username,
        "decision": decision, "old_label": old_label, "new_label": new_label, "note": (note or "").strip() or None,
        "model_version": pred["model_version"], "created_at": utc_now(), "replaces": replaces,
        "bulk_id": bulk_id}).last_pk


def record_review(store: Store, user: User, product_id: int, decision: str, *, new_label: str | None = None,
                  prediction_id: int | None = None, note: str | None = None,
                  seen_review_id: int | None = None, respect_claims: bool = False) -> int:
    """Save a reviewer's decision on a product: accept the predicted label, correct it to
    `new_label`, mark it out of scope (no category fits; never trained on), or skip.
    `seen_review_id` is the item's `seen_review_id` when it was shown: the decision is
    refused (DecisionConflict) if the reviewer no longer holds the claim and someone
    settled the product since. `respect_claims` (a caller that never claimed, e.g. an HTTP
    client deciding a product it knows by id): refused while another reviewer holds it.
    Returns the review id."""
    require(user, "review")
    if decision not in DECISIONS:
        raise InputError(f"unknown decision '{decision}'; one of {', '.join(DECISIONS)}")
    with store.transaction() as db:
        user = require_current(db, user, "review")
        if db.execute("SELECT 1 FROM products WHERE id = ?", [product_id]).fetchone() is None:
            raise NotFound(f"no product {product_id}")
        if respect_claims:
            _check_not_claimed(db, user, product_id)
        if decision != "skip":
            _check_not_overtaken(db, user, product_id, seen_review_id)
        review_id = insert_decision(db, user, product_id, decision, new_label=new_label,
                                     prediction_id=prediction_id, note=note)
        db.execute("DELETE FROM claims WHERE product_id = ? AND user = ?", [product_id, user.username])
    return review_id


def _catalogue_label(db, product_id: int) -> dict:
    """A product with no prediction (an imported catalogue item): its current label (the
    latest decision, else the catalogue's) and the categories it may be corrected to."""
    row = db.execute("SELECT label FROM effective_labels WHERE product_id = ?", [product_id]).fetchone()
    if row is None:
        raise InputError(f"no product {product_id}")
    if row[0] is None:
        raise InputError(f"product {product_id} has neither a prediction nor a label to review")
    known = [r[0] for r in db.execute("SELECT DISTINCT true_label FROM products WHERE true_label IS NOT NULL "
                                      "UNION SELECT DISTINCT new_label FROM live_reviews WHERE new_label IS NOT NULL "
                                      f"AND decision IN {SETTLING_SQL}")]
    return {"label": row[0], "labels": to_json(sorted(known)), "model_version": None}


@dataclass(frozen=True)
class Feedback:
    review_id: int
    suggestion: bool  # True: a viewer's suggestion, waiting for a reviewer; False: a decision


def record_feedback(store: Store, user: User, product_id: int, *, correct_label: str | None = None,
                    prediction_id: int | None = None, note: str | None = None) -> Feedback:
    """The Predict page's "is this right?" on a product this user scored: a reviewer's
    answer is a decision; a viewer's is a suggestion for the reviewers (never a training
    label). Which one is decided by the user's role here, never by the caller."""
    user = require_current(store, user, "predict")
    owner = store.one("SELECT created_by FROM products WHERE id = ?", [product_id])
    if owner is None:
        raise InputError(f"no product {product_id}")
    if owner["created_by"] != user.username and not user.can("review"):
        raise InputError("you can only give feedback on products you scored")
    if user.can("review"):
        decision = "correct" if correct_label else "accept"
        return Feedback(record_review(store, user, product_id, decision, new_label=correct_label,
                                      prediction_id=prediction_id, note=note), suggestion=False)
    with store.transaction() as db:
        review_id = insert_decision(db, user, product_id, SUGGEST, new_label=correct_label,
                                     prediction_id=prediction_id, note=note)
    return Feedback(review_id, suggestion=True)


# --------------------------------------------------------------------------- undo and change


@dataclass(frozen=True)
class Undone:
    review_id: int
    product_id: int
    decision: str
    label: str | None


def _check_still_latest(db, review: dict) -> None:
    later = settled_decision(db, review["product_id"])
    if later is not None and later["id"] > review["id"]:
        raise DecisionConflict(f"{later['reviewer']} decided product {review['product_id']} after this decision; "
                               "nothing was changed")


def _revoke(db, user: User, review_id: int) -> None:
    db.execute("UPDATE reviews SET revoked_at = ?, revoked_by = ? WHERE id = ?", [utc_now(), user.username, review_id])


def undo_last(store: Store, user: User) -> Undone | None:
    """Undo the user's latest decision (not already undone); the product goes back to
    them as their current item. None when there is nothing to undo."""
    user = require_current(store, user, "review")
    with store.transaction() as db:
        row = db.execute(f"SELECT * FROM live_reviews WHERE reviewer = ? AND decision IN {DECISIONS_SQL} "
                         "ORDER BY id DESC LIMIT 1", [user.username]).fetchone()
        if row is None:
            return None
        review = dict(row)
        _check_still_latest(db, review)
        _revoke(db, user, review["id"])
        store.audit(user.username, "review.undo", {"review_id": review["id"], "product_id": review["product_id"],
                                                   "decision": review["decision"]}, db=db)
        held = db.execute("SELECT user FROM claims WHERE product_id = ? AND expires_at > ?",
                          [review["product_id"], time.time()]).fetchone()
        if held is None or held[0] == user.username:
            db.execute("DELETE FROM claims WHERE user = ?", [user.username])
            db["claims"].upsert({"product_id": review["product_id"], "user": user.username,
                                 "expires_at": time.time() + CLAIM_SECONDS}, pk="product_id")
    return Undone(review["id"], review["product_id"], review["decision"], review["new_label"])


def change_decision(store: Store, user: User, review_id: int, decision: str, *, new_label: str | None = None,
                    note: str | None = None) -> int:
    """Replace one of the user's decisions (an admin may change anyone's) with another:
    the old row is kept, marked undone, and the new one names it. Refused when someone
    decided the product after it. Returns the new review id."""
    user = require_current(store, user, "review")
    if decision not in SETTLING:
        raise InputError(f"a decision can be changed to {', '.join(SETTLING)}")
    with store.transaction() as db:
        row = db.execute("SELECT * FROM reviews WHERE id = ?", [review_id]).fetchone()
        if row is None:
            raise InputError(f"no decision {review_id}")
        review = dict(row)
        if review["reviewer"] != user.username and not user.can("users"):
            raise InputError("you can only change your own decisions")
        if review["revoked_at"] is not None:
            raise InputError(f"decision {review_id} was undone already")
        _check_still_latest(db, review)
        _revoke(db, user, review_id)
        new_id = insert_decision(db, user, review["product_id"], decision, new_label=new_label,
                                  prediction_id=review["prediction_id"], note=note, replaces=review_id)
        store.audit(user.username, "review.change", {"review_id": review_id, "new_review_id": new_id,
                                                     "product_id": review["product_id"], "decision": decision,
                                                     "new_label": new_label}, db=db)
    return new_id


def categories_of(store: Store, product_id: int) -> list[str]:
    """The categories a decision on this product may name: its latest prediction's classes,
    or for a catalogue item every label known to the database — with every node above
    them, so a partial path ("Apparel" for "Apparel >> Topwear >> Shirts") can be saved."""
    with store.read() as db:
        row = db.execute("SELECT labels FROM predictions WHERE product_id = ? ORDER BY id DESC LIMIT 1",
                         [product_id]).fetchone()
        labels = row[0] if row else _catalogue_label(db, product_id)["labels"]
    return category_choices(from_json(labels))


def my_decisions(store: Store, user: User, *, search: str = "", decision: str | None = None,
                 include_undone: bool = False, limit: int = 500) -> pd.DataFrame:
    """The user's decisions, newest first, with the product's text: what the "My
    decisions" list shows and changes."""
    require(user, "review")
    sql = """SELECT r.id AS review_id, r.product_id, r.created_at, r.decision, r.old_label, r.new_label, r.note,
                    r.revoked_at IS NOT NULL AS undone, pr.text
             FROM reviews r JOIN products pr ON pr.id = r.product_id
             WHERE r.reviewer = :user AND r.decision != :suggest"""
    params: dict = {"user": user.username, "suggest": SUGGEST, "limit": int(limit)}
    if not include_undone:
        sql += " AND r.revoked_at IS NULL"
    if decision:
        sql += " AND r.decision = :decision"
        params["decision"] = decision
    if search.strip():
        sql += " AND (pr.text LIKE :q OR r.new_label LIKE :q OR r.old_label LIKE :q OR r.note LIKE :q)"
        params["q"] = f"%{search.strip()}%"
    rows = store.query(sql + " ORDER BY r.id DESC LIMIT :limit", params)
    return pd.DataFrame(rows, columns=["review_id", "product_id", "created_at", "decision", "old_label", "new_label",
                                       "note", "undone", "text"])


def reviews_of(store: Store, product_id: int) -> list[dict]:
    return store.query("SELECT * FROM reviews WHERE product_id = ? ORDER BY id", [product_id])
