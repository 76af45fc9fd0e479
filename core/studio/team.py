"""Team view: how each reviewer works (counts, speed, agreement with others and with the
model) and the products two reviewers decided differently, for an admin to settle.

Only decisions not undone count (an undone decision was a mistake its author took back),
and never viewers' suggestions. Bulk accepts count as decisions but not for speed or for
agreement with the model: they are the model's label by construction, all at one instant.
An admin settles a disagreement with an ordinary decision (`record_review`), which becomes
the product's label; a product whose settled decision is an admin's is no longer listed.
"""

from __future__ import annotations

from statistics import median

import pandas as pd

from core.common.errors import InputError
from core.studio.auth import User, require
from core.studio.store import DECISIONS_SQL, SETTLING, SETTLING_SQL, Store

OUT_OF_SCOPE = "(out of scope)"  # how an out-of-scope decision reads among the labels
STATS_COLUMNS = ["reviewer", "decisions", "accepts", "corrections", "skips", "out_of_scope", "bulk", "undone",
                 "median_seconds", "agreement_with_others", "compared_with_others", "agreement_with_model",
                 "compared_with_model"]
DISAGREEMENT_COLUMNS = ["product_id", "text", "decisions", "labels", "label", "label_source", "predicted_label",
                        "reviewers", "latest_review_id"]

_REVIEWS = f"""
SELECT r.id, r.product_id, r.reviewer, r.decision, r.new_label, r.created_at, r.bulk_id,
       r.revoked_at IS NOT NULL AS undone, pred.label AS predicted_label
FROM reviews r LEFT JOIN predictions pred ON pred.id = r.prediction_id
WHERE r.decision IN {DECISIONS_SQL}
ORDER BY r.id
"""


def _outcome(row: dict) -> str:
    """What a settling decision says the product is."""
    return OUT_OF_SCOPE if row["decision"] == "out_of_scope" else row["new_label"]


def _seconds(a: str, b: str) -> float:
    return (pd.Timestamp(b) - pd.Timestamp(a)).total_seconds()


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def reviewer_stats(store: Store, user: User) -> pd.DataFrame:
    """One row per reviewer: decisions by kind, bulk and undone counts, median seconds
    between consecutive decisions (speed), agreement with later decisions of others on
    the same product, and agreement with the model's prediction (accept/correct only)."""
    require(user, "users")
    rows = store.query(_REVIEWS)
    live = [r for r in rows if not r["undone"]]
    settling_by_product: dict[int, list[dict]] = {}
    for r in live:
        if r["decision"] in SETTLING:
            settling_by_product.setdefault(r["product_id"], []).append(r)

    stats = []
    for name in sorted({r["reviewer"] for r in rows}):
        mine = [r for r in live if r["reviewer"] == name]
        kinds = [r["decision"] for r in mine]
        times = [r["created_at"] for r in rows if r["reviewer"] == name and r["bulk_id"] is None]
        gaps = [_seconds(a, b) for a, b in zip(times, times[1:])]
        pairs = agree = 0
        for r in mine:
            if r["decision"] not in SETTLING:
                continue
            for later in settling_by_product[r["product_id"]]:
                if later["id"] > r["id"] and later["reviewer"] != name:
                    pairs += 1
                    agree += _outcome(later) == _outcome(r)
        vs_model = [r for r in mine if r["decision"] in ("accept", "correct") and r["bulk_id"] is None
                    and r["predicted_label"] is not None]
        with_model = sum(r["new_label"] == r["predicted_label"] for r in vs_model)
        stats.append({
            "reviewer": name, "decisions": len(mine), "accepts": kinds.count("accept"),
            "corrections": kinds.count("correct"), "skips": kinds.count("skip"),
            "out_of_scope": kinds.count("out_of_scope"), "bulk": sum(r["bulk_id"] is not None for r in mine),
            "undone": sum(1 for r in rows if r["reviewer"] == name and r["undone"]),
            "median_seconds": median(gaps) if gaps else None,
            "agreement_with_others": _rate(agree, pairs), "compared_with_others": pairs,
            "agreement_with_model": _rate(with_model, len(vs_model)), "compared_with_model": len(vs_model)})
    frame = pd.DataFrame(stats, columns=STATS_COLUMNS)
    return frame.sort_values(["decisions", "reviewer"], ascending=[False, True], ignore_index=True)


def disagreements(store: Store, user: User) -> pd.DataFrame:
    """Products where two reviewers' latest decisions (not undone) differ and no admin has
    settled them yet (an admin's decision is not the product's settled one)."""
    require(user, "users")
    rows = store.query(f"""
        WITH candidates AS (SELECT product_id FROM live_reviews WHERE decision IN {SETTLING_SQL}
                            GROUP BY product_id HAVING COUNT(DISTINCT reviewer) > 1),
             present AS MATERIALIZED (  -- built once: joined per review, the view would be scanned per row
               SELECT e.product_id, e.label, e.label_source, e.review_id AS settled_id,
                      COALESCE(u.role = 'admin', 0) AS settled_by_admin
               FROM effective_labels e LEFT JOIN users u ON u.username = e.reviewer
               WHERE e.product_id IN (SELECT product_id FROM candidates))
        SELECT r.id, r.product_id, r.reviewer, r.decision, r.new_label, p.text, present.label, present.label_source,
               present.settled_id, present.settled_by_admin,
               (SELECT label FROM predictions WHERE product_id = r.product_id ORDER BY id DESC LIMIT 1)
                   AS predicted_label
        FROM present
        JOIN live_reviews r ON r.product_id = present.product_id
        JOIN products p ON p.id = r.product_id
        WHERE r.decision IN {SETTLING_SQL}
        ORDER BY r.product_id, r.id""")
    by_product: dict[int, list[dict]] = {}
    for r in rows:
        by_product.setdefault(r["product_id"], []).append(r)
    out = []
    for product_id, decisions in by_product.items():
        latest = {r["reviewer"]: r for r in decisions}  # each reviewer's latest word (rows are in id order)
        labels = sorted({_outcome(r) for r in latest.values()})
        head = decisions[-1]
        if len(latest) < 2 or len(labels) < 2 or head["settled_by_admin"]:
            continue
        out.append({
            "product_id": product_id, "text": head["text"],
            "decisions": " · ".join(f"{r['reviewer']}: {_outcome(r)}" for r in sorted(latest.values(),
                                                                                       key=lambda r: r["id"])),
            "labels": labels, "label": head["label"] if head["label"] is not None else OUT_OF_SCOPE,
            "label_source": head["label_source"], "predicted_label": head["predicted_label"],
            "reviewers": len(latest), "latest_review_id": head["settled_id"]})
    return pd.DataFrame(out, columns=DISAGREEMENT_COLUMNS)


def settle_disagreement(store: Store, user: User, product_id: int, label: str | None, *,
                        seen_review_id: int | None = None, note: str | None = None) -> int:
    """An admin's decision on a disputed product: `label` (None or OUT_OF_SCOPE: out of
    scope). Refused if someone decided it after `seen_review_id` (what the admin saw).
    Returns the review id."""
    require(user, "users")
    from core.studio.review_queue import record_review

    reference = store.one("""SELECT COALESCE((SELECT label FROM predictions WHERE product_id = :id
                                              ORDER BY id DESC LIMIT 1), e.label) AS label
                             FROM effective_labels e WHERE e.product_id = :id""", {"id": int(product_id)})
    if reference is None:
        raise InputError(f"no product {product_id}")
    note = note or "settled a disagreement between reviewers"
    if label is None or label == OUT_OF_SCOPE:
        decision, new_label = "out_of_scope", None
    elif label == reference["label"]:
        decision, new_label = "accept", None
    else:
        decision, new_label = "correct", label
    return record_review(store, user, int(product_id), decision, new_label=new_label, note=note,
                         seen_review_id=seen_review_id)
