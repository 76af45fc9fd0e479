"""Classification metrics in one JSON-ready shape, used by training (validation
metrics in the bundle), `evaluate`, the benchmark and the app."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """accuracy, macro-F1 (over the classes that occur in truth or prediction, as
    scikit-learn does), per-class F1 and support, and the confusion matrix with its
    row/column order. Empty input gives n=0 and None metrics rather than an error."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true, y_pred = list(y_true), list(y_pred)
    if not y_true:
        return {"n": 0, "accuracy": None, "macro_f1": None, "per_class_f1": {}, "support": {},
                "confusion_matrix": {"labels": list(labels), "matrix": []}}
    order = list(labels) + sorted(set(y_true) - set(labels))
    # a prediction outside the labels (e.g. "(none)": the model could not predict the row)
    # is a miss with a column of its own in the matrix, not a class of the macro average
    order += sorted(set(y_pred) - set(order))
    present = sorted(set(y_true) | (set(y_pred) & set(labels)), key=order.index)
    f1 = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    support = {c: int(n) for c, n in zip(*np.unique(y_true, return_counts=True))}
    return {
        "n": len(y_true),
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(np.mean(f1)), 6),
        "per_class_f1": {c: round(float(v), 6) for c, v in zip(present, f1)},
        "support": support,
        "confusion_matrix": {"labels": order,
                             "matrix": confusion_matrix(y_true, y_pred, labels=order).tolist()},
    }


def top_confusions(confusion: dict, k: int = 15) -> list[dict]:
    """The k largest off-diagonal cells of a `classification_metrics` confusion matrix, as
    {"true", "predicted", "count", "share"} (share of the true class's rows): with many
    classes a heatmap is unreadable, this list says what to fix first."""
    labels, matrix = confusion.get("labels") or [], np.asarray(confusion.get("matrix") or [], dtype=float)
    if matrix.size == 0:
        return []
    rows = matrix.sum(axis=1)
    cells = [(matrix[i, j], i, j) for i, j in zip(*np.nonzero(matrix)) if i != j]
    cells.sort(key=lambda c: (-c[0], labels[c[1]], labels[c[2]]))
    return [{"true": labels[i], "predicted": labels[j], "count": int(n), "share": round(float(n / rows[i]), 4)}
            for n, i, j in cells[:k]]
