"""core.models.tree: the learned tree, its targets (partial paths, back-off) and the joint
decode that never answers with a path the tree does not have."""

from __future__ import annotations

import numpy as np
import pytest

from core.common.category_path import category_choices
from core.models.tree import CategoryTree

PATHS = (["Home >> Bed >> Sheets"] * 4 + ["Home >> Bed >> Pillows"] * 3 + ["Home >> Bath >> Towels"] * 3
         + ["Toys >> Puzzles"] * 3  # a shallower branch: a real leaf at level 2
         + ["Home >> Bed >> Quilts"]  # seen once: backs off to "Home >> Bed" when min_rows=2
         + ["Home", "Toys"])  # partial: a reviewer who only knew the top level


def test_levels_labels_and_back_off():
    assert "Home >> Bed >> Quilts" in CategoryTree.from_paths(PATHS).labels  # by default every leaf is kept
    tree = CategoryTree.from_paths(PATHS, min_rows=2)
    assert tree.depth == 3
    assert tree.levels[0] == ["Home", "Toys"]
    assert tree.levels[1] == ["Home >> Bath", "Home >> Bed", "Toys >> Puzzles"]
    # level 3: the leaves, "Toys >> Puzzles" stopping above, and "Home >> Bed" for the quilt that backed off
    assert tree.levels[2] == ["Home >> Bath >> Towels", "Home >> Bed", "Home >> Bed >> Pillows",
                              "Home >> Bed >> Sheets", "Toys >> Puzzles"]
    assert tree.labels == tree.levels[2]  # every complete path, backed off where rare
    assert not any("Quilts" in label for label in tree.labels)


def test_partial_paths_train_only_the_levels_they_have():
    tree = CategoryTree.from_paths(PATHS, min_rows=2)
    levels, labels = tree.targets(PATHS)
    home, toys = PATHS.index("Home"), PATHS.index("Toys")
    for row in (home, toys):
        assert levels[0][row] >= 0 and levels[1][row] == -1 and levels[2][row] == -1 and labels[row] == -1
    quilt = PATHS.index("Home >> Bed >> Quilts")
    assert tree.levels[2][levels[2][quilt]] == "Home >> Bed" and tree.labels[labels[quilt]] == "Home >> Bed"
    puzzle = PATHS.index("Toys >> Puzzles")
    assert [tree.levels[k][levels[k][puzzle]] for k in range(3)] == ["Toys", "Toys >> Puzzles", "Toys >> Puzzles"]


def test_the_decode_never_leaves_the_tree():
    """Level heads that each prefer a different, incompatible node: the answer is still a
    path of the tree, and the probabilities are over those paths only."""
    tree = CategoryTree.from_paths(PATHS)
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(len(level)), size=200) for level in tree.levels]
    probs[0][:, tree.levels[0].index("Toys")] = 5  # level 1 insists on Toys …
    probs[2][:, tree.levels[2].index("Home >> Bed >> Sheets")] = 5  # … level 3 on a Home leaf
    probs = [p / p.sum(axis=1, keepdims=True) for p in probs]
    q = tree.decode(probs)
    assert q.shape == (200, len(tree.labels))
    np.testing.assert_allclose(q.sum(axis=1), 1, atol=1e-5)
    assert {tree.labels[i] for i in q.argmax(axis=1)} <= set(tree.labels)
    # each level's probabilities summed up from the paths agree with the decode
    marginals = tree.level_probs(q)
    np.testing.assert_allclose(marginals[0].sum(axis=1), 1, atol=1e-5)
    for row in q[:20]:
        label = tree.labels[int(row.argmax())]
        confidences = tree.level_confidences(row, label)
        known = [c for c in confidences if c is not None]
        assert len(known) == len(label.split(" >> ")) and known == sorted(known, reverse=True)


def test_fitted_weights_make_the_decode_honest():
    """Over-confident level heads (right 60% of the time, sure 99%): the weights fitted by
    likelihood bring the path's confidence down towards its accuracy."""
    tree = CategoryTree.from_paths(PATHS)
    rng = np.random.default_rng(1)
    n = 2000
    y = rng.integers(0, len(tree.labels), n)
    shown = np.where(rng.random(n) < 0.6, y, rng.integers(0, len(tree.labels), n))
    probs = []
    for k, level in enumerate(tree.levels):
        p = np.full((n, len(level)), 0.01 / len(level))
        p[np.arange(n), tree.label_class[k][shown]] += 0.99
        probs.append(p / p.sum(axis=1, keepdims=True))
    before = tree.decode(probs).max(axis=1).mean()
    tree.fit_weights(probs, y)
    q = tree.decode(probs)
    accuracy = float((q.argmax(axis=1) == y).mean())
    assert before > 0.95 and abs(q.max(axis=1).mean() - accuracy) < 0.05


def test_save_load_and_flat_trees():
    tree = CategoryTree.from_paths(PATHS)
    tree.weights = np.array([0.3, 0.4, 0.7])
    again = CategoryTree.from_dict(tree.to_dict())
    assert again.labels == tree.labels and again.levels == tree.levels
    np.testing.assert_allclose(again.weights, tree.weights)
    flat = CategoryTree.from_paths(["Watches", "Toys", "Toys", "Watches", "Books"])
    assert flat.is_flat and flat.labels == ["Books", "Toys", "Watches"]  # a class seen once stays: flat keeps all
    p = np.array([[0.2, 0.5, 0.3]])
    np.testing.assert_allclose(flat.decode([p]), p, atol=1e-5)  # weight 1: a flat model's own probabilities


@pytest.mark.parametrize("query, found", [("bedsheet", "Home Furnishing >> Bed Linen >> Bedsheets"),
                                          ("bed linen", "Home Furnishing >> Bed Linen"),
                                          ("furnishing", "Home Furnishing")])
def test_the_picker_offers_every_node_and_finds_a_path_by_any_part(query, found):
    labels = ["Home Furnishing >> Bed Linen >> Bedsheets", "Home Furnishing >> Bed Linen >> Blankets",
              "Home Furnishing >> Curtains", "Kitchen >> Cookware"]
    choices = category_choices(labels)
    assert choices == ["Home Furnishing", "Home Furnishing >> Bed Linen", "Home Furnishing >> Bed Linen >> Bedsheets",
                       "Home Furnishing >> Bed Linen >> Blankets", "Home Furnishing >> Curtains", "Kitchen",
                       "Kitchen >> Cookware"]
    # what the picker's type-to-filter does: any part of the text, any case
    assert found in [c for c in choices if query.casefold() in c.casefold()]


def test_a_bundle_saved_before_trees_still_loads_and_predicts(tmp_path):
    """tests/fixtures/flat_bundle_v1 was written by the code before trees (format 1, no
    tree.json): it loads verified, reads as a one-level tree, and predicts its classes."""
    import shutil
    from pathlib import Path

    from core.models.classifier import Classifier

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "flat_bundle_v1"
    shutil.copytree(fixture, tmp_path / "old")
    classifier = Classifier.load(tmp_path / "old")
    assert classifier.verified and classifier.tree.is_flat and classifier.labels == ["Kitchen", "Toys", "Watches"]
    texts = ["chronograph wrist strap", "nonstick skillet ladle", "plush doll puzzle"]
    result = classifier.predict_batch(texts)
    assert [classifier.labels[i] for i in result.fused.argmax(axis=1)] == ["Watches", "Kitchen", "Toys"]
    one = classifier.predict(text=texts[0])
    assert one.leaf == one.label == "Watches" and one.levels() == [("Watches", one.confidence)]
