"""Metrics for category trees ("A >> B >> C" paths): per-level scores, hierarchical
precision/recall/F1, invalid paths and calibration, for `evaluate`, the benchmark and the app.

Pure numpy/scikit-learn (no TensorFlow), so the app and the benchmark can score saved
predictions cheaply. A flat label is a path of one level, so every function here also
works on a flat model (depth 1). Class names at level k are prefix strings ("A >> B"),
never bare level names: two "Accessories" under different parents stay two classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from core.common.category_path import path_depth, prefix, prefixes
from core.training.metrics import classification_metrics

NONE = "(none)"  # the level-k "prediction" of a path shallower than k: always a miss
SUMMARY_KEYS = ("n", "accuracy", "macro_f1")


def level_predictions(paths: Iterable[str | None], level: int) -> list[str | None]:
    """Each path cut to `level` levels; None where it is shallower (or missing)."""
    return [prefix(p, level) if p else None for p in paths]


def level_metrics(y_true_paths: Sequence[str | None], y_pred_paths: Sequence[str | None], level: int, *,
                  confusion: bool = True) -> dict:
    """`classification_metrics` at one level, over the rows whose TRUE path reaches `level`;
    a prediction shallower than `level` counts as the miss "(none)". Classes: the sorted true
    prefixes. `confusion=False` drops the confusion matrix (a 142×142 list is most of the JSON)."""
    truth = level_predictions(y_true_paths, level)
    pred = level_predictions(y_pred_paths, level)
    rows = [i for i, t in enumerate(truth) if t is not None]
    y_true = [truth[i] for i in rows]
    y_pred = [pred[i] if pred[i] is not None else NONE for i in rows]
    with warnings.catch_warnings():  # one class at a level (a tree with one root) is legitimate
        warnings.filterwarnings("ignore", message="A single label was found")
        metrics = classification_metrics(y_true, y_pred, sorted(set(y_true)))
    if not confusion:
        metrics.pop("confusion_matrix", None)
    return metrics


def per_level_metrics(y_true_paths: Sequence[str | None], y_pred_paths: Sequence[str | None], depth: int, *,
                      confusion: bool = True) -> dict[str, dict]:
    """{"level_1": metrics, …, "level_<depth>": metrics}, each as `level_metrics`."""
    return {f"level_{k}": level_metrics(y_true_paths, y_pred_paths, k, confusion=confusion)
            for k in range(1, depth + 1)}


def hierarchical_prf(y_true_paths: Sequence[str | None], y_pred_paths: Sequence[str | None]) -> dict:
    """Hierarchical precision/recall/F1, micro-averaged over rows: T and P are the ancestor
    sets (prefixes, the path itself included) of the true and predicted paths;
    hP = Σ|T∩P| / Σ|P|, hR = Σ|T∩P| / Σ|T|. Rows without a truth are skipped; a missing
    prediction has P = ∅ (it lowers recall only). None where a denominator is 0."""
    hit = n_pred = n_true = 0
    for true, pred in zip(y_true_paths, y_pred_paths):
        if not true:
            continue
        t = set(prefixes(true))
        p = set(prefixes(pred)) if pred else set()
        hit += len(t & p)
        n_pred += len(p)
        n_true += len(t)
    precision = hit / n_pred if n_pred else None
    recall = hit / n_true if n_true else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": _round(precision), "recall": _round(recall), "f1": _round(f1)}


def invalid_path_share(y_pred_paths: Iterable[str | None], valid_paths: Iterable[str]) -> float:
    """Share of predictions that are neither a path of the training tree nor a prefix of one
    (a tree model must never invent a branch; the issue's target is 0). Missing predictions
    (None: a row with neither text nor photo) are not predictions and are skipped; no
    predictions at all gives 0.0."""
    valid = {p for path in valid_paths if path for p in prefixes(path)}
    preds = [p for p in y_pred_paths if p is not None]
    if not preds:
        return 0.0
    return round(sum(1 for p in preds if p not in valid) / len(preds), 6)


def calibration(confidences: Sequence[float], correct: Sequence[bool], bins: int = 10) -> dict:
    """Expected calibration error over equal-width confidence bins on [0, 1] (1.0 falls in
    the last bin): ECE = Σ_b n_b/N · |accuracy_b − confidence_b|. Every bin is listed,
    empty ones with n=0 and None means, so a reliability diagram has a fixed x axis.
    Non-finite confidences (rows without a prediction) are skipped. No rows: ece None."""
    conf = np.asarray(confidences, dtype=float).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"confidences ({conf.size}) and correct ({ok.size}) differ in length")
    keep = np.isfinite(conf)
    conf, ok = np.clip(conf[keep], 0.0, 1.0), ok[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out_bins, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        mean_conf = float(conf[sel].mean()) if n else None
        acc = float(ok[sel].mean()) if n else None
        if n:
            ece += n / len(conf) * abs(acc - mean_conf)
        out_bins.append({"lo": round(float(edges[b]), 6), "hi": round(float(edges[b + 1]), 6), "n": n,
                         "confidence": _round(mean_conf), "accuracy": _round(acc)})
    return {"n": len(conf), "ece": _round(ece) if len(conf) else None, "bins": out_bins}


def confidence_gap(confidences: Sequence[float], correct: Sequence[bool]) -> dict:
    """Mean confidence against accuracy on a set of rows (e.g. where text and photo disagree):
    the issue's target is |gap| ≤ 0.10. Empty: n=0 and None."""
    conf = np.asarray(confidences, dtype=float).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    keep = np.isfinite(conf)
    conf, ok = conf[keep], ok[keep]
    if not len(conf):
        return {"n": 0, "confidence": None, "accuracy": None, "gap": None}
    return {"n": len(conf), "confidence": _round(conf.mean()), "accuracy": _round(ok.mean()),
            "gap": _round(conf.mean() - ok.mean())}


def level_confidences(labels: Sequence[str], probs: np.ndarray, level: int) -> tuple[list[str | None], np.ndarray]:
    """Each row's level-`level` prediction and its confidence: the prefix at `level` of the
    top label, and the summed probability of every label under that prefix (the mass the
    model puts on that node). Rows whose top label is shallower than `level` (a leaf that
    backed off to its parent), or whose probabilities are NaN: (None, NaN)."""
    probs = np.asarray(probs, dtype=float)
    n = len(probs)
    node_of = level_predictions(labels, level)
    nodes = sorted({p for p in node_of if p is not None})
    index = {p: j for j, p in enumerate(nodes)}
    # labels × nodes membership, so one matrix product sums the mass per node
    member = np.zeros((len(labels), max(len(nodes), 1)))
    for i, node in enumerate(node_of):
        if node is not None:
            member[i, index[node]] = 1.0
    mass = probs @ member if n else np.zeros((0, member.shape[1]))
    valid = np.isfinite(probs).all(axis=1) if n else np.zeros(0, bool)
    top = np.argmax(np.where(np.isfinite(probs), probs, -np.inf), axis=1) if n else np.zeros(0, int)
    preds: list[str | None] = []
    conf = np.full(n, np.nan)
    for i in range(n):
        node = node_of[int(top[i])] if valid[i] else None
        preds.append(node)
        if node is not None:
            conf[i] = mass[i, index[node]]
    return preds, conf


def top_paths(labels: Sequence[str], probs: np.ndarray, mask: np.ndarray | None = None) -> list[str | None]:
    """The top label of each row; None where the row has no prediction (mask False or NaN)."""
    probs = np.asarray(probs, dtype=float)
    mask = np.ones(len(probs), bool) if mask is None else np.asarray(mask, dtype=bool)
    out: list[str | None] = []
    for row, ok in zip(probs, mask):
        out.append(labels[int(np.nanargmax(row))] if ok and np.isfinite(row).any() else None)
    return out


def model_report(y_true_paths: Sequence[str | None], labels: Sequence[str], probs: np.ndarray,
                 mask: np.ndarray | None = None, *, valid_paths: Iterable[str] | None = None,
                 depth: int | None = None, bins: int = 10, per_class: bool = False) -> dict:
    """Everything `tree_report` says about one model's probabilities (see there)."""
    probs = np.asarray(probs, dtype=float)
    mask = np.ones(len(probs), bool) if mask is None else np.asarray(mask, dtype=bool)
    rows = [i for i in range(len(probs)) if mask[i] and y_true_paths[i]]
    truth = [y_true_paths[i] for i in rows]
    sub = probs[rows] if rows else np.zeros((0, len(labels)))
    pred = top_paths(labels, sub)
    depth = depth or max((path_depth(t) for t in truth), default=1)
    valid = list(valid_paths) if valid_paths is not None else list(labels)

    levels: dict[str, dict] = {}
    for k in range(1, depth + 1):
        metrics = level_metrics(truth, pred, k, confusion=False)
        entry = {key: metrics[key] for key in SUMMARY_KEYS}
        if per_class:
            entry["per_class_f1"] = metrics["per_class_f1"]
        node, conf = level_confidences(labels, sub, k)
        true_k = level_predictions(truth, k)
        rated = [i for i in range(len(truth)) if true_k[i] is not None and node[i] is not None]
        entry["calibration"] = calibration(conf[rated], [node[i] == true_k[i] for i in rated], bins)
        entry["shallower_predictions"] = sum(1 for i in range(len(truth)) if true_k[i] is not None and node[i] is None)
        levels[f"level_{k}"] = entry

    top_conf = sub.max(axis=1) if len(sub) else np.zeros(0)
    return {
        "n": len(truth),
        "depth": depth,
        "levels": levels,
        "hierarchical": hierarchical_prf(truth, pred),
        "invalid_path_share": invalid_path_share(pred, valid),
        # the whole predicted path's probability against "is it exactly the true path"
        "calibration": calibration(top_conf, [p == t for p, t in zip(pred, truth)], bins),
    }


def disagreement_report(y_true_paths: Sequence[str | None], labels: Sequence[str], fused: np.ndarray,
                        text: np.ndarray, image: np.ndarray, has_text: np.ndarray, has_image: np.ndarray,
                        depth: int | None = None) -> dict:
    """Fused confidence against accuracy on the rows where text and photo both predict but
    disagree: on the whole path ("path") and per level (disagreement and confidence at that
    level: a shared parent is agreement at level 1 even when the leaves differ)."""
    both = np.asarray(has_text, bool) & np.asarray(has_image, bool)
    rows = [i for i in range(len(fused)) if both[i] and y_true_paths[i]]
    truth = [y_true_paths[i] for i in rows]
    fused, text, image = (np.asarray(a, dtype=float)[rows] if rows else np.zeros((0, len(labels)))
                          for a in (fused, text, image))
    depth = depth or max((path_depth(t) for t in truth), default=1)
    t_top, i_top, f_top = top_paths(labels, text), top_paths(labels, image), top_paths(labels, fused)
    apart = [j for j in range(len(rows)) if t_top[j] != i_top[j]]
    out = {"rows_with_both": len(rows),
           "path": confidence_gap(fused.max(axis=1)[apart] if apart else [], [f_top[j] == truth[j] for j in apart])}
    for k in range(1, depth + 1):
        t_k, i_k = level_predictions(t_top, k), level_predictions(i_top, k)
        node, conf = level_confidences(labels, fused, k)
        true_k = level_predictions(truth, k)
        sel = [j for j in range(len(rows)) if true_k[j] is not None and node[j] is not None and t_k[j] != i_k[j]]
        out[f"level_{k}"] = confidence_gap(conf[sel], [node[j] == true_k[j] for j in sel])
    return out


def tree_report(y_true_paths: Sequence[str | None],
                models: Mapping[str, tuple[Sequence[str], np.ndarray, np.ndarray | None]], *,
                valid_paths: Iterable[str] | None = None, depth: int | None = None, bins: int = 10,
                per_class: bool = False) -> dict:
    """The tree evaluation of one or more models on the same rows, JSON-ready.

    y_true_paths: the true path per row ("A >> B >> C"; shorter or None allowed: a row
        counts at the levels its truth has).
    models: name -> (labels, probs, mask): labels are the model's classes (full paths, some
        shallower where a rare leaf backed off), probs an (n, len(labels)) array, mask the
        rows where that model predicts (None: all). `batch_models(batch)` turns a
        BatchPrediction into {"fused", "text", "image"} in this shape.
    valid_paths: the training tree's paths (default: each model's labels).
    depth: levels to score (default: the deepest true path).
    For each model: per-level accuracy / macro-F1 (rows whose truth reaches that level; a
    shallower prediction is a miss) with the calibration at that level (confidence = the
    summed probability of all labels under the predicted node, correct = the node is the
    true prefix), hierarchical P/R/F1, invalid-path share, and the calibration of the
    whole path (top probability vs exact match). When "fused", "text" and "image" are all
    given, "disagreement" holds the fused calibration on rows where text and photo
    disagree (see `disagreement_report`).

    Typical use (`python -m core evaluate`)::

        batch = classifier.predict_batch(texts, image_paths)
        report = tree_report(true_paths, batch_models(batch), valid_paths=classifier.labels)
    """
    all_truth = [t for t in y_true_paths if t]
    depth = depth or max((path_depth(t) for t in all_truth), default=1)
    valid = list(valid_paths) if valid_paths is not None else None
    out: dict = {"n": len(y_true_paths), "depth": depth}
    for name, (labels, probs, mask) in models.items():
        out[name] = model_report(y_true_paths, list(labels), probs, mask, valid_paths=valid, depth=depth,
                                 bins=bins, per_class=per_class)
    if {"fused", "text", "image"} <= set(models):
        labels, fused, _ = models["fused"]
        if list(models["text"][0]) == list(labels) == list(models["image"][0]):
            out["disagreement"] = disagreement_report(y_true_paths, list(labels), fused, models["text"][1],
                                                      models["image"][1], _mask(models["text"][2], len(fused)),
                                                      _mask(models["image"][2], len(fused)), depth)
    return out


def batch_models(batch) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """{"fused", "text", "image"} -> (labels, probs, mask) from a BatchPrediction (anything
    with .labels, .fused, .text, .image, .has_text, .has_image), for `tree_report`."""
    has_text, has_image = np.asarray(batch.has_text, bool), np.asarray(batch.has_image, bool)
    labels = list(batch.labels)
    return {"fused": (labels, batch.fused, has_text | has_image), "text": (labels, batch.text, has_text),
            "image": (labels, batch.image, has_image)}


def _mask(mask, n: int) -> np.ndarray:
    return np.ones(n, bool) if mask is None else np.asarray(mask, bool)


def _round(value) -> float | None:
    return None if value is None else round(float(value), 6)
