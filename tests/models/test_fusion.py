"""core.models.fusion: the learned fusion (log-linear pool or stacked logistic regression)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.models.fusion import EPS, Fusion

K = 4
KINDS = ("pool", "stacked_logistic_regression")  # the stackers Fusion.fit chooses between


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def synthetic(n_per_class: int, seed: int):
    """Out-of-fold-like probabilities where the text cannot tell classes 0 and 1 apart
    and the photo cannot tell 2 and 3 apart; each is sharp on the other pair."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), n_per_class)
    rng.shuffle(y)
    n = len(y)

    def model(confused: tuple[int, int]) -> np.ndarray:
        z = rng.normal(0.0, 0.7, size=(n, K))
        z[np.arange(n), y] += 3.0
        rows = np.isin(y, confused)
        z[np.ix_(rows, confused)] = 3.0 + rng.normal(0.0, 0.7, size=(rows.sum(), 2))
        return _softmax(z)

    return model((0, 1)), model((2, 3)), y


def accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def fitted():
    p_text, p_image, y = synthetic(60, seed=0)
    return Fusion().fit(p_text, p_image, y, seed=0)


def test_fused_beats_both_models_when_they_fail_on_different_classes(fitted):
    p_text, p_image, y = synthetic(60, seed=1)  # fresh data, not the fitting set
    both = np.ones(len(y), dtype=bool)
    fused = fitted.predict_proba(p_text, p_image, both, both)
    acc_text, acc_image, acc_fused = accuracy(p_text, y), accuracy(p_image, y), accuracy(fused, y)
    assert acc_text < 0.85 and acc_image < 0.85  # the setting is what the test says
    assert acc_fused > max(acc_text, acc_image) + 0.1, (acc_text, acc_image, acc_fused)
    assert acc_fused >= 0.9
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, atol=1e-5)
    assert fitted.fitted and fitted.coef.shape == (K, 2 * K) and fitted.intercept.shape == (K,)
    assert fitted.kind in ("pool", "stacked_logistic_regression")
    if fitted.kind == "stacked_logistic_regression":
        assert fitted.C in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def handmade(kind: str) -> Fusion:
    """Fusions with arbitrary weights of both shapes: the decomposition must not depend
    on what fitting happened to produce."""
    rng = np.random.default_rng(8)
    if kind == "pool":
        coef = np.hstack([1.3 * np.eye(K), 0.4 * np.eye(K)])
    else:
        coef = rng.normal(0, 1, (K, 2 * K))
    return Fusion(coef=coef, intercept=rng.normal(0, 1, K), kind=kind)


@pytest.mark.parametrize("which", ["fitted", *KINDS])
def test_contributions_add_up_to_the_logits(fitted, which):
    fusion = fitted if which == "fitted" else handmade(which)
    p_text, p_image, _ = synthetic(10, seed=2)
    parts = fusion.contributions(p_text, p_image)
    assert set(parts) == {"text", "image", "bias"}
    assert all(v.shape == (len(p_text), K) for v in parts.values())
    logits = fusion.logits(p_text, p_image)
    np.testing.assert_allclose(parts["text"] + parts["image"] + parts["bias"], logits, rtol=1e-12, atol=1e-10)
    # and each part is what it claims: text only moves with the text probabilities
    other = fusion.contributions(p_text, np.full_like(p_image, 1.0 / K))
    np.testing.assert_array_equal(other["text"], parts["text"])
    np.testing.assert_array_equal(other["bias"], parts["bias"])
    assert not np.allclose(other["image"], parts["image"])
    # the fused probabilities are the softmax of those logits
    both = np.ones(len(p_text), dtype=bool)
    np.testing.assert_allclose(fusion.predict_proba(p_text, p_image, both, both), _softmax(logits), atol=1e-6)


def test_missing_modalities(fitted):
    p_text, p_image, _ = synthetic(2, seed=3)  # 8 rows
    has_text = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=bool)
    has_image = np.array([1, 0, 1, 0, 0, 1, 1, 0], dtype=bool)
    out = fitted.predict_proba(p_text, p_image, has_text, has_image)
    assert out.shape == (8, K) and out.dtype == np.float32
    text_only, image_only = has_text & ~has_image, has_image & ~has_text
    np.testing.assert_array_equal(out[text_only], p_text[text_only].astype("float32"))
    np.testing.assert_array_equal(out[image_only], p_image[image_only].astype("float32"))
    assert np.isnan(out[~has_text & ~has_image]).all()
    both = has_text & has_image
    np.testing.assert_allclose(out[both], _softmax(fitted.logits(p_text[both], p_image[both])), atol=1e-6)

    # a model without a text part passes None for it
    none_text = fitted.predict_proba(None, p_image, np.zeros(8, bool), has_image)
    np.testing.assert_array_equal(none_text[has_image], p_image[has_image].astype("float32"))
    assert np.isnan(none_text[~has_image]).all()


def test_unfitted_fusion_uses_the_text_model_for_rows_with_both():
    p_text, p_image, _ = synthetic(2, seed=4)
    both = np.ones(len(p_text), dtype=bool)
    fusion = Fusion()
    assert not fusion.fitted
    np.testing.assert_array_equal(fusion.predict_proba(p_text, p_image, both, both), p_text.astype("float32"))


def test_save_load_round_trip(fitted, tmp_path):
    path = tmp_path / "fusion.json"
    fitted.save(path)
    data = json.loads(path.read_text())
    assert data["kind"] == fitted.kind
    loaded = Fusion.load(path)
    np.testing.assert_array_equal(loaded.coef, fitted.coef)
    np.testing.assert_array_equal(loaded.intercept, fitted.intercept)
    assert loaded.C == fitted.C and loaded.kind == fitted.kind
    p_text, p_image, _ = synthetic(5, seed=5)
    both = np.ones(len(p_text), dtype=bool)
    np.testing.assert_array_equal(loaded.predict_proba(p_text, p_image, both, both),
                                  fitted.predict_proba(p_text, p_image, both, both))

    Fusion().save(tmp_path / "empty.json")
    assert not Fusion.load(tmp_path / "empty.json").fitted


def test_class_absent_from_fitting_data_is_never_predicted():
    """Only classes 0 and 2 of 3 in y (sklearn would fit a binary model, which must be
    scattered back into the full label order)."""
    rng = np.random.default_rng(6)
    y = np.repeat([0, 2], 30)
    z_text = rng.normal(0, 1, (60, 3))
    z_text[np.arange(60), y] += 2.5
    z_image = rng.normal(0, 1, (60, 3))
    z_image[np.arange(60), y] += 1.0
    p_text, p_image = _softmax(z_text), _softmax(z_image)
    fusion = Fusion().fit(p_text, p_image, y)
    assert fusion.kind in KINDS and fusion.coef.shape == (3, 6)
    if fusion.kind == "stacked_logistic_regression":
        assert np.all(fusion.coef[1] == 0) and fusion.intercept[1] == -30.0
    both = np.ones(60, dtype=bool)
    out = fusion.predict_proba(p_text, p_image, both, both)
    assert out[:, 1].mean() < 0.05 and set(out.argmax(axis=1)) <= {0, 2}
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(out, y) >= accuracy(p_text, y) - 0.05
    parts = fusion.contributions(p_text, p_image)
    np.testing.assert_allclose(sum(parts.values()), fusion.logits(p_text, p_image), rtol=1e-12, atol=1e-10)


def test_single_example_class_still_fits():
    p_text, p_image, y = synthetic(10, seed=7)
    keep = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:1]])  # class 3: one row
    fusion = Fusion().fit(p_text[keep], p_image[keep], y[keep])
    assert fusion.fitted and fusion.kind in KINDS
    both = np.ones(len(keep), dtype=bool)
    out = fusion.predict_proba(p_text[keep], p_image[keep], both, both)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(out, y[keep]) >= 0.9


def test_features_are_log_probabilities_with_eps():
    fusion = Fusion(coef=np.hstack([np.eye(2), np.zeros((2, 2))]), intercept=np.zeros(2))
    p = np.array([[1.0, 0.0]])
    np.testing.assert_allclose(fusion.logits(p, p), [[np.log(1 + EPS), np.log(EPS)]])
