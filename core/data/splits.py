"""Grouping and splitting rows so that repeated texts never straddle train and validation."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from core.common.text import identity_key


def dedup_groups(texts: Sequence[str]) -> np.ndarray:
    """Integer group id per row; rows with the same normalized text share an id, so a
    grouped train/test split cannot put one text on both sides. Each empty text gets its
    own group (image-only rows are not duplicates of each other)."""
    ids: dict[str, int] = {}
    out = np.empty(len(texts), dtype=np.int64)
    next_id = 0
    for i, text in enumerate(texts):
        key = identity_key(text)
        if not key:
            out[i] = next_id
            next_id += 1
            continue
        if key not in ids:
            ids[key] = next_id
            next_id += 1
        out[i] = ids[key]
    return out


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    """Stratified, grouped folds; tolerant of classes smaller than n_splits (the number
    of folds shrinks to the largest class). Fewer than two possible folds: []."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = min(n_splits, int(np.unique(y, return_counts=True)[1].max()), len(set(groups)))
    if n_splits < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
        return list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(y, y, groups))


def split_train_val(y: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if val_fraction <= 0:
        return np.arange(len(y)), np.array([], dtype=int)
    folds = grouped_folds(y, groups, max(2, round(1 / val_fraction)), seed)
    if not folds:
        return np.arange(len(y)), np.array([], dtype=int)
    train, val = folds[0]
    return np.sort(train), np.sort(val)
