"""core.train splits: grouped by duplicate text, stratified, tolerant of tiny classes."""

from __future__ import annotations

import numpy as np
import pytest

from core.catalog import dedup_groups
from core.train import _split, split_train_val


@pytest.mark.parametrize("labels", [np.repeat(["Watches", "Toys", "Mugs"], 20), np.repeat([0, 1, 2], 20)])
def test_folds_never_split_a_duplicated_text(labels):
    texts = [f"product {i // 2}" for i in range(len(labels))]  # every text twice, same label
    groups = dedup_groups(texts)
    folds = _split(labels, groups, 5, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(labels), int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert set(labels[test]) == set(labels)  # stratified: every class in every fold
        seen[test] += 1
    assert (seen == 1).all()


def test_fold_count_shrinks_to_the_largest_class():
    labels = np.array(["a"] * 3 + ["b"] * 2)
    assert len(_split(labels, np.arange(5), 5, seed=0)) == 3
    assert _split(np.array(["a", "b"]), np.arange(2), 5, seed=0) == []


def test_validation_split_size_and_disjointness():
    labels = np.repeat(["x", "y"], 50)
    train, val = split_train_val(labels, np.arange(100), 0.2, seed=1)
    assert len(val) == 20 and not set(train) & set(val) and len(train) + len(val) == 100
    train, val = split_train_val(labels, np.arange(100), 0.0, seed=1)
    assert len(train) == 100 and len(val) == 0
