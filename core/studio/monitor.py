"""Aggregations for the Monitor page: how much is scored, how sure the model is, what
reviewers correct, whether the traffic drifts. Read-only SQL over the store, returned
as pandas DataFrames that `pages._ui.charts` draws.

Days are UTC calendar days (`substr(created_at, 1, 10)` of the ISO timestamps), and a
window of `days=30` means today and the 29 days before it; `days=None` means all time.
Only decisions that settle a product with a category count as reviewed: `accept` and
`correct`, not undone (a `skip` leaves it in the queue; `out_of_scope` names no category;
a viewer's `suggest` is not a decision). A review's predicted class is its `old_label`; its final class
is `new_label` for a correction and `old_label` for an accept. An empty database gives
empty frames with the documented columns, never an error.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd

from core.common.category_path import prefix
from core.studio.auth import User, require_current
from core.studio.store import LABELLING_SQL, Store

BOTH_MODELS = "p.text_probs IS NOT NULL AND p.text_probs != 'null' " \
              "AND p.image_probs IS NOT NULL AND p.image_probs != 'null'"
FINAL_LABEL = "CASE WHEN r.decision = 'correct' THEN coalesce(r.new_label, r.old_label) ELSE r.old_label END"


def since(days: int | None, now: datetime | None = None) -> str | None:
    """First day (YYYY-MM-DD, UTC) of a window of `days` days ending today; None for all time."""
    if days is None:
        return None
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    return (today - timedelta(days=max(int(days), 1) - 1)).isoformat()


def _window(days: int | None, column: str = "p.created_at") -> tuple[str, dict]:
    start = since(days)
    return ("", {}) if start is None else (f"substr({column}, 1, 10) >= :since", {"since": start})


def _where(*conditions: str) -> str:
    conditions = tuple(c for c in conditions if c)
    return "WHERE " + " AND ".join(conditions) if conditions else ""


def _frame(rows: list[dict], dtypes: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)


def _rate(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    return (numerator / denominator.where(denominator > 0)).astype("float64")


def predictions_per_day(store: Store, days: int | None = 30) -> pd.DataFrame:
    """day, predictions, reviewed: predictions made each day, and how many distinct
    products predicted that day have an accept/correct review."""
    window, params = _window(days)
    rows = store.query(f"""
        SELECT substr(p.created_at, 1, 10) AS day, count(*) AS predictions,
               count(DISTINCT CASE WHEN EXISTS (SELECT 1 FROM live_reviews r WHERE r.product_id = p.product_id
                                                AND r.decision IN {LABELLING_SQL})
                              THEN p.product_id END) AS reviewed
        FROM predictions p {_where(window)}
        GROUP BY day ORDER BY day""", params)
    return _frame(rows, {"day": "str", "predictions": "int64", "reviewed": "int64"})


def confidence_values(store: Store, days: int | None = 30) -> pd.DataFrame:
    """confidence, label, model_version of every prediction in the window (oldest first)."""
    window, params = _window(days)
    rows = store.query(f"""
        SELECT p.confidence, p.label, p.model_version FROM predictions p {_where(window)}
        ORDER BY p.created_at, p.id""", params)
    return _frame(rows, {"confidence": "float64", "label": "str", "model_version": "str"})


def at_level(label: str | None, level: int | None) -> str | None:
    """A label read at one level of the category tree: its path cut to `level` levels (a
    path that stops above stays as it is; a flat label is its own level 1)."""
    if label is None or level is None:
        return label
    return prefix(label, level) or label


def _pairs(store: Store) -> list[dict]:
    """(predicted, final, n) over accept/correct reviews: what a reviewer was shown, what it ended as."""
    return store.query(f"""
        SELECT r.old_label AS predicted, {FINAL_LABEL} AS final, count(*) AS n
        FROM live_reviews r WHERE r.decision IN {LABELLING_SQL} AND r.old_label IS NOT NULL
        GROUP BY predicted, final""")


def correction_rate_per_class(store: Store, level: int | None = None) -> pd.DataFrame:
    """label (the predicted class), reviewed, corrected, rate: of the accept/correct
    reviews of each predicted class, how many ended on another class. At a tree `level`,
    classes are that level's nodes, and a correction within the node is no correction there."""
    counts: dict[str, list[int]] = {}
    for row in _pairs(store):
        label, final = at_level(row["predicted"], level), at_level(row["final"], level)
        entry = counts.setdefault(label, [0, 0])
        entry[0] += int(row["n"])
        entry[1] += int(row["n"]) * (final != label)
    frame = _frame([{"label": k, "reviewed": v[0], "corrected": v[1]} for k, v in sorted(counts.items())],
                   {"label": "str", "reviewed": "int64", "corrected": "int64"})
    frame["rate"] = _rate(frame["corrected"], frame["reviewed"])
    return frame


def predicted_vs_corrected(store: Store, level: int | None = None) -> tuple[list[str], list[list[int]]]:
    """(labels, matrix) over accept/correct reviews, in `classification_metrics`' layout:
    matrix[i][j] counts products whose final (reviewed) class is labels[i] and whose
    predicted class was labels[j], so `charts.confusion_heatmap` draws it as is; at a
    tree `level`, over that level's nodes."""
    rows = [{"predicted": at_level(r["predicted"], level), "final": at_level(r["final"], level), "n": r["n"]}
            for r in _pairs(store)]
    labels = sorted({row["predicted"] for row in rows} | {row["final"] for row in rows})
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for row in rows:
        matrix[index[row["final"]]][index[row["predicted"]]] += int(row["n"])
    return labels, matrix


def disagreement_rate(store: Store, days: int | None = 30) -> pd.DataFrame:
    """day, predictions, both_models, disagreements, rate: per day, how often the
    description's and the photo's top classes differ, among predictions that had both
    (rate = disagreements / both_models; NaN on a day without such predictions)."""
    window, params = _window(days)
    rows = store.query(f"""
        SELECT substr(p.created_at, 1, 10) AS day, count(*) AS predictions,
               coalesce(sum({BOTH_MODELS}), 0) AS both_models,
               coalesce(sum(({BOTH_MODELS}) AND p.disagree = 1), 0) AS disagreements
        FROM predictions p {_where(window)}
        GROUP BY day ORDER BY day""", params)
    frame = _frame(rows, {"day": "str", "predictions": "int64", "both_models": "int64", "disagreements": "int64"})
    frame["rate"] = _rate(frame["disagreements"], frame["both_models"])
    return frame


def summary(store: Store) -> dict:
    """All-time totals for the page's headline numbers. `products`: products with at
    least one prediction; `pending`: those without an accept/correct review yet; rates
    are None while their denominator is zero."""
    row = store.one(f"""
        SELECT (SELECT count(*) FROM predictions) AS predictions,
               (SELECT count(DISTINCT product_id) FROM predictions) AS products,
               (SELECT count(*) FROM live_reviews r WHERE r.decision IN {LABELLING_SQL}) AS reviews,
               (SELECT count(*) FROM live_reviews r WHERE r.decision IN {LABELLING_SQL}
                  AND r.old_label IS NOT NULL AND {FINAL_LABEL} != r.old_label) AS corrections,
               (SELECT count(*) FROM live_reviews r WHERE r.decision IN {LABELLING_SQL} AND r.old_label IS NOT NULL)
                  AS labelled_reviews,
               (SELECT count(*) FROM live_reviews r WHERE r.decision = 'skip') AS skipped,
               (SELECT count(DISTINCT p.product_id) FROM predictions p WHERE NOT EXISTS (
                  SELECT 1 FROM live_reviews r WHERE r.product_id = p.product_id AND r.decision IN {LABELLING_SQL}))
                  AS pending,
               (SELECT count(*) FROM predictions p WHERE {BOTH_MODELS}) AS both_models,
               (SELECT count(*) FROM predictions p WHERE {BOTH_MODELS} AND p.disagree = 1) AS disagreements""")
    ratio = lambda n, d: n / d if d else None  # noqa: E731
    return {"predictions": row["predictions"], "products": row["products"], "reviews": row["reviews"],
            "corrections": row["corrections"], "skipped": row["skipped"], "pending": row["pending"],
            "disagreement_rate": ratio(row["disagreements"], row["both_models"]),
            "correction_rate": ratio(row["corrections"], row["labelled_reviews"])}


def class_distribution(store: Store, training_counts: dict[str, int] | None, days: int | None = 30,
                       level: int | None = None) -> pd.DataFrame:
    """label, predicted, predicted_share, training_share: each class's share of the
    predictions in the window beside its share of the training data (the model's
    `per_class_train` counts), for every class in either (at a tree `level`: its nodes); sorted by label."""
    window, params = _window(days)
    rows = store.query(f"SELECT p.label, count(*) AS predicted FROM predictions p {_where(window)} "
                       "GROUP BY p.label", params)
    predicted: dict[str, int] = {}
    for row in rows:
        key = at_level(row["label"], level)
        predicted[key] = predicted.get(key, 0) + int(row["predicted"])
    training: dict[str, int] = {}
    for k, v in (training_counts or {}).items():
        key = at_level(str(k), level)
        training[key] = training.get(key, 0) + int(v)
    n_pred, n_train = sum(predicted.values()), sum(training.values())
    out = [{"label": label, "predicted": predicted.get(label, 0),
            "predicted_share": predicted.get(label, 0) / n_pred if n_pred else 0.0,
            "training_share": training.get(label, 0) / n_train if n_train else 0.0}
           for label in sorted(set(predicted) | set(training))]
    return _frame(out, {"label": "str", "predicted": "int64", "predicted_share": "float64",
                        "training_share": "float64"})


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: NaN becomes None, numpy scalars plain numbers."""
    return [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict(orient="records")]


def _histogram(values: pd.Series, bins: int = 10) -> dict:
    """Counts of confidences in `bins` equal buckets over [0, 1] (the last one closed)."""
    import numpy as np

    counts, edges = np.histogram(values.to_numpy(dtype=float), bins=bins, range=(0.0, 1.0))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def report(store: Store, user: User, days: int | None = 30, level: int | None = None) -> dict:
    """Everything the Monitor page draws, as plain data (the HTTP API's GET /v1/monitor):
    totals, per-day counts, confidences, corrections and drift (at a tree `level`)."""
    from core.studio.registry import live_model

    require_current(store, user, "monitor")
    live = live_model(store)
    labels, matrix = predicted_vs_corrected(store, level)
    training = live.metadata.per_class_train if live is not None else {}
    return {"model_version": live.version if live else None, "days": days, "level": level,
            "summary": summary(store),
            "predictions_per_day": _records(predictions_per_day(store, days)),
            "confidence_histogram": _histogram(confidence_values(store, days)["confidence"]),
            "correction_rate_per_class": _records(correction_rate_per_class(store, level)),
            "predicted_vs_corrected": {"labels": labels, "matrix": matrix},
            "disagreement_rate": _records(disagreement_rate(store, days)),
            "class_distribution": _records(class_distribution(store, training, days, level))}
