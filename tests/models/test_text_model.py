"""core.models.text_model: Keras text classifiers on raw strings (tfidf and bilstm)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers.catalogues import BRANDS, CLASS_SPECS, FILLER

CLASSES = ("Watches", "Kitchen", "Toys", "Computers")


def keyword_texts(n_per_class: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Short product texts whose only class signal is two of the class's keywords,
    mixed with brand and filler words shared by every class (no ids that leak the class)."""
    rng = random.Random(seed)
    texts, y = [], []
    for label, name in enumerate(CLASSES):
        words = CLASS_SPECS[name][0]
        for _ in range(n_per_class):
            tokens = rng.sample(words, 2) + rng.sample(FILLER, 3) + [rng.choice(BRANDS)]
            rng.shuffle(tokens)
            texts.append(" ".join(tokens))
            y.append(label)
    order = rng.sample(range(len(texts)), len(texts))
    return [texts[i] for i in order], np.array([y[i] for i in order])


@pytest.fixture(scope="module")
def data():
    train = keyword_texts(20, seed=0)
    test = keyword_texts(8, seed=1)
    # held out means held out: no test text was seen verbatim in training
    assert not set(test[0]) & set(train[0])
    return train, test


@pytest.fixture(scope="module")
def tfidf(data):
    from core.models.text_model import TextModel

    (x, y), _ = data
    return TextModel("tfidf", epochs=10, seed=0).fit(x, y)


@pytest.fixture(scope="module")
def bilstm(data):
    from core.models.text_model import TextModel

    (x, y), _ = data
    return TextModel("bilstm", epochs=2, seed=0).fit(x, y)


def test_tfidf_learns_keyword_task(tfidf, data):
    _, (x_test, y_test) = data
    probs = tfidf.predict_proba(x_test)
    assert probs.shape == (len(x_test), len(CLASSES))
    accuracy = float((probs.argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.9, accuracy
    assert tfidf.num_classes == len(CLASSES)
    # the Keras model is the solver's linear model: same scores, same ranking
    margins = tfidf.margins(tfidf._featurizer.transform(x_test))[0]
    np.testing.assert_array_equal(margins.argmax(axis=1), probs.argmax(axis=1))
    default = tfidf.temperatures
    tfidf.finalize([0.1])  # a lower temperature sharpens the probabilities, never reorders them
    sharper = tfidf.predict_proba(x_test)
    np.testing.assert_array_equal(sharper.argmax(axis=1), probs.argmax(axis=1))
    assert sharper.max(axis=1).mean() > probs.max(axis=1).mean()
    tfidf.finalize(default)


def test_bilstm_trains_and_predicts_probabilities(bilstm, data):
    _, (x_test, _) = data
    probs = bilstm.predict_proba(x_test)
    assert probs.shape == (len(x_test), len(CLASSES))
    assert probs.dtype == np.float32
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert bilstm.model.name == "text_bilstm"
    assert len(bilstm.history["loss"]) == 2


@pytest.mark.parametrize("arch", ["tfidf", "bilstm"])
def test_save_load_gives_identical_predictions(arch, request, data, tmp_path):
    from core.models.text_model import TextModel

    model = request.getfixturevalue(arch)
    _, (x_test, _) = data
    texts = x_test[:10] + ["", "completely unseen words zzz", "WATCH Strap!!"]
    before = model.predict_proba(texts)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = TextModel.load(path, arch=arch)
    assert loaded.arch == arch
    assert loaded.num_classes == len(CLASSES)
    after = loaded.predict_proba(texts)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["tfidf", "bilstm"])
def test_empty_and_odd_strings_predict(arch, request):
    model = request.getfixturevalue(arch)
    texts = ["", " ", "€ ünïcode 😀", "x" * 5000]
    probs = model.predict_proba(texts)
    assert probs.shape == (len(texts), len(CLASSES))
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_predict_on_no_texts_and_batching(tfidf, data):
    assert tfidf.predict_proba([]).shape == (0, len(CLASSES))
    _, (x_test, _) = data
    whole = tfidf.predict_proba(x_test)
    batched = tfidf.predict_proba(x_test, batch_size=7)  # several batches, last one short
    np.testing.assert_allclose(batched, whole, atol=1e-6)


def test_unknown_arch_and_unfitted_model_raise():
    from core.models.text_model import TextModel

    with pytest.raises(ValueError, match="unknown text architecture 'cnn'.*tfidf.*bilstm"):
        TextModel("cnn")
    with pytest.raises(RuntimeError, match="not fitted"):
        TextModel("tfidf").predict_proba(["a watch"])


def test_a_tree_model_learns_each_level_and_answers_with_valid_paths_only(data):
    """Two levels ("Wearables" > Watches, …): one head per level, a partial row trains level 1
    only, and the saved model's output is the joint decode over the tree's paths."""
    from core.models.text_model import TextModel
    from core.models.tree import CategoryTree

    (x, y), (x_test, y_test) = data
    parent = {"Watches": "Wearables", "Toys": "Kids", "Kitchen": "Home", "Computers": "Home"}
    paths = [f"{parent[CLASSES[i]]} >> {CLASSES[i]}" for i in y]
    paths[0] = paths[0].split(" >> ")[0]  # a reviewer who only knew the top level
    tree = CategoryTree.from_paths(paths)
    assert tree.levels[0] == ["Home", "Kids", "Wearables"] and len(tree.labels) == 4
    level_y, label_y = tree.targets(paths)
    assert level_y[0][0] >= 0 and level_y[1][0] == -1 and label_y[0] == -1
    model = TextModel("tfidf", num_classes=[len(c) for c in tree.levels]).fit(x, level_y)
    assert [c.shape[0] for c, _ in model.solved] == [3, 4]
    model.finalize([0.5, 0.5], tree)
    probs = model.predict_proba(x_test)
    assert probs.shape == (len(x_test), 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    truth = [tree.labels.index(f"{parent[CLASSES[i]]} >> {CLASSES[i]}") for i in y_test]
    assert float((probs.argmax(axis=1) == truth).mean()) >= 0.9
