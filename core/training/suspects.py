"""Suspected mislabels: catalogue rows whose given label the model doubts.

Confident learning (cleanlab) needs each row's class probabilities from a model that
never saw that row: out-of-fold predictions, with folds grouped by de-duplicated text
so a copy of a row cannot vouch for it. Fast linear models give them here (TF-IDF
words + characters for the description, the image backbone's cached embeddings for the
photo, their log-probabilities averaged where both exist); cleanlab turns them into a
per-row score (1 − self-confidence in the given label) and a yes/no flag from its
per-class thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from core.common.errors import InputError
from core.data.catalogue import Catalogue
from core.data.splits import dedup_groups
from core.models.options import DEFAULT_BACKBONE

Progress = Callable[[float, str], None]


@dataclass
class SuspectResult:
    labels: list[str]
    rows: np.ndarray          # catalogue row indices that were scored
    given: np.ndarray         # index into labels, per scored row
    probs: np.ndarray         # out-of-fold probabilities, per scored row
    score: np.ndarray         # suspect score in [0, 1]: higher = more likely mislabelled
    flagged: np.ndarray       # cleanlab's verdict
    text_best: np.ndarray | None = None   # each model's own top class per row (-1: that model had no input)
    image_best: np.ndarray | None = None

    def suggested(self) -> list[str]:
        return [self.labels[i] for i in self.probs.argmax(1)]

    def own_opinion(self, k: int) -> tuple[str | None, str | None]:
        """(text model's, photo model's) top class for scored row k, None where it had no input."""
        pick = lambda best: None if best is None or best[k] < 0 else self.labels[int(best[k])]  # noqa: E731
        return pick(self.text_best), pick(self.image_best)


def _folds(y: np.ndarray, groups: np.ndarray, n: int, seed: int):
    from core.data.splits import grouped_folds

    folds = grouped_folds(y, groups, n, seed)
    if not folds:
        raise InputError("too few rows per class to find suspects (need at least two per class)")
    return folds


def _oof(features, y: np.ndarray, folds, num_classes: int, make_model) -> np.ndarray:
    out = np.zeros((len(y), num_classes))
    for train, test in folds:
        model = make_model().fit(features[train], y[train])
        out[np.ix_(test, model.classes_)] = model.predict_proba(features[test])
    return out


def _text_oof(texts: list[str], y, folds, num_classes: int) -> np.ndarray:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                            max_features=200_000).fit_transform(texts)
    features = hstack([words, chars]).tocsr()
    return _oof(features, y, folds, num_classes, lambda: LogisticRegression(C=20, max_iter=3000))


def _image_oof(embeddings: np.ndarray, y, folds, num_classes: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _oof(embeddings, y, folds, num_classes,
                lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000)))


def find_suspects(catalogue: Catalogue, *, folds: int = 5, seed: int = 0, backbone: str = DEFAULT_BACKBONE,
                  weights: str | None = "imagenet", on_progress: Progress | None = None) -> SuspectResult:
    """Out-of-fold probabilities for every labelled usable row, ranked by cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    progress = on_progress or (lambda f, m: None)
    rows = np.flatnonzero(catalogue.trainable_mask())
    labels = sorted({catalogue.labels[i] for i in rows})
    if len(labels) < 2:
        raise InputError(f"{catalogue.source.name}: finding suspects needs at least two classes")
    y = np.array([labels.index(catalogue.labels[i]) for i in rows])
    texts = [catalogue.texts[i] for i in rows]
    _folds(y, dedup_groups(texts), folds, seed)  # enough rows per class at all?
    has_text = np.array([bool(t.strip()) for t in texts])
    log_sum, count = np.zeros((len(rows), len(labels))), np.zeros(len(rows))
    text_best, image_best = np.full(len(rows), -1), np.full(len(rows), -1)

    if has_text.sum() >= 2:
        progress(0.1, "text model, out of fold")
        t_rows = np.flatnonzero(has_text)
        t_folds = _folds(y[t_rows], dedup_groups([texts[i] for i in t_rows]), folds, seed)
        p = _text_oof([texts[i] for i in t_rows], y[t_rows], t_folds, len(labels))
        log_sum[t_rows] += np.log(np.clip(p, 1e-6, 1))
        count[t_rows] += 1
        text_best[t_rows] = p.argmax(1)
    paths = [catalogue.image_paths[i] for i in rows]
    if any(p is not None for p in paths):
        from core.models.image_model import ImageModel

        progress(0.4, "photo embeddings")
        emb, has_image = ImageModel(backbone, num_classes=len(labels), weights=weights).embed(paths)
        if has_image.sum() >= 2 and len(set(y[has_image])) >= 2:
            progress(0.7, "image model, out of fold")
            i_rows = np.flatnonzero(has_image)
            i_folds = _folds(y[i_rows], dedup_groups([texts[i] for i in i_rows]), folds, seed)
            p = _image_oof(emb[i_rows], y[i_rows], i_folds, len(labels))
            log_sum[i_rows] += np.log(np.clip(p, 1e-6, 1))
            count[i_rows] += 1
            image_best[i_rows] = p.argmax(1)
    if not count.any():
        raise InputError("no rows with a description or photo to score")
    probs = np.exp(log_sum / np.maximum(count, 1)[:, None])
    probs /= probs.sum(1, keepdims=True)
    quality = get_label_quality_scores(y, probs, method="self_confidence")
    flagged = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    progress(1.0, "ranked")
    return SuspectResult(labels, rows, y, probs, 1.0 - quality, np.asarray(flagged, dtype=bool), text_best,
                         image_best)


def ranked_frame(catalogue: Catalogue, result: SuspectResult) -> pd.DataFrame:
    """The catalogue's original rows, most suspect first, with suspect_score, the model's
    suggested label and cleanlab's flag; unscored rows (no label, nothing usable) last."""
    frame = catalogue.frame.copy()
    frame["suspect_score"] = np.nan
    frame["suggested_label"] = ""
    frame["suspected"] = False
    frame.loc[frame.index[result.rows], "suspect_score"] = np.round(result.score, 6)
    frame.loc[frame.index[result.rows], "suggested_label"] = result.suggested()
    frame.loc[frame.index[result.rows], "suspected"] = result.flagged
    frame["row"] = np.arange(1, len(frame) + 1)  # the CSV data row, to find it again
    return frame.sort_values("suspect_score", ascending=False, na_position="last", kind="stable")
