"""Learned fusion of the text and image models.

A plain average of the two models' probabilities scores *below* the text model alone
on Flipkart: the image model is weaker and its confusions overlap the text model's.
So the fusion is learned from out-of-fold predictions (never from probabilities a
model made for its own training rows, which are over-confident), choosing by
cross-validated log-loss between three stackers over both models' log-probabilities:

- "pool": a weighted log-linear pool, a * log p_text + b * log p_image + bias per
  class (2 + classes parameters: robust when the image model adds little);
- "stacked_logistic_regression": a full multinomial logistic regression (it can learn
  that the photo is trustworthy for some classes and the text for others);
- "shared_pool": a * log p_text + b * log p_image alone (2 parameters), for a tree's many
  leaves with one or two rows, where per-class biases only learn noise.

Both are linear in the two models' log-probabilities, so each class's fused logit
splits exactly into a text part, an image part and a bias: `contributions()` gives
that decomposition, which the explanations use to say "decided by the photo".
A row with only one modality gets that model's probabilities unchanged.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EPS = 1e-6


def _features(p_text: np.ndarray, p_image: np.ndarray) -> np.ndarray:
    return np.hstack([np.log(p_text + EPS), np.log(p_image + EPS)])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_pool(p_text, p_image, y, num_classes: int, seed: int, *, biases: bool = True):
    """a * log p_text + b * log p_image (+ a bias per class, small L2): maximum likelihood.
    Without biases (`_fit_shared_pool`) a and b are kept in [0, 10]."""
    from scipy.optimize import minimize

    lt, li = np.log(p_text + EPS), np.log(p_image + EPS)
    rows = np.arange(len(y))

    def loss(w):
        bias = w[2:] if biases else 0.0
        z = w[0] * lt + w[1] * li + bias
        z = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        p = np.exp(z - log_norm[:, None])
        onehot = np.zeros_like(p)
        onehot[rows, y] = 1.0
        g = (p - onehot) / len(y)
        grad = np.r_[(g * lt).sum(), (g * li).sum(), g.sum(axis=0) + 2e-3 * w[2:] if biases else []]
        return -(z[rows, y] - log_norm).mean() + 1e-3 * (w[2:] ** 2).sum(), grad

    start = np.r_[1.0, 0.5, np.zeros(num_classes if biases else 0)]
    w = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=None if biases else [(0.0, 10.0)] * 2).x
    eye = np.eye(num_classes)
    return np.hstack([w[0] * eye, w[1] * eye]), w[2:].copy() if biases else np.zeros(num_classes), None


def _fit_shared_pool(p_text, p_image, y, num_classes: int, seed: int):
    """a * log p_text + b * log p_image, no per-class bias: two parameters, for the many
    classes with one or two rows (a tree's leaves), where per-class biases only overfit."""
    return _fit_pool(p_text, p_image, y, num_classes, seed, biases=False)


def _fit_logistic(p_text, p_image, y, num_classes: int, seed: int):
    """Multinomial logistic regression on both log-probability vectors, C by inner CV."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    x = _features(p_text, p_image)
    counts = np.bincount(y, minlength=num_classes)
    folds = int(min(5, counts[counts > 0].min()))
    if folds >= 2:
        model = LogisticRegressionCV(Cs=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0], cv=folds, scoring="neg_log_loss",
                                     max_iter=2000, random_state=seed)
    else:  # a class with a single example: no CV possible, use a safe middle value
        model = LogisticRegression(C=0.3, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # sklearn 1.9 parameter renames
        model.fit(x, y)
    # sklearn drops classes absent from y; scatter back into the full label set.
    coef = np.zeros((num_classes, 2 * num_classes))
    intercept = np.full(num_classes, -30.0)
    present = model.classes_.astype(int)
    if len(present) == 2:  # binary sklearn models store one row: logit(c1) = w·x + b
        coef[present[1]], intercept[present[1]] = model.coef_[0], model.intercept_[0]
        intercept[present[0]] = 0.0
    else:
        coef[present], intercept[present] = model.coef_, model.intercept_
    C = float(np.atleast_1d(model.C_)[0]) if hasattr(model, "C_") else float(model.C)
    return coef, intercept, C


@dataclass
class Fusion:
    coef: np.ndarray | None = None  # (classes, 2 * classes): text block, then image block
    intercept: np.ndarray | None = None  # (classes,)
    C: float | None = None  # regularisation of the logistic regression, if that was chosen
    kind: str | None = None

    @property
    def fitted(self) -> bool:
        return self.coef is not None

    def fit(self, p_text: np.ndarray, p_image: np.ndarray, y: np.ndarray, *, seed: int = 0) -> "Fusion":
        """p_text, p_image: out-of-fold probabilities for rows that have both modalities."""
        from sklearn.model_selection import KFold, StratifiedKFold

        num_classes = p_text.shape[1]
        counts = np.bincount(y, minlength=num_classes)
        folds = int(min(5, counts[counts > 0].min()))
        candidates = {"pool": _fit_pool, "stacked_logistic_regression": _fit_logistic,
                      "shared_pool": _fit_shared_pool}
        # pick the stacker by cross-validated log-loss; where some class has a single row
        # (a tree's rare leaves) the folds cannot be stratified, but the choice matters most
        splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if folds >= 2
                    else KFold(min(5, len(y)), shuffle=True, random_state=seed) if len(y) >= 10 else None)
        if splitter is not None:
            losses = dict.fromkeys(candidates, 0.0)
            for fit_idx, test_idx in splitter.split(p_text, y):
                for kind, fit in candidates.items():
                    coef, intercept, _ = fit(p_text[fit_idx], p_image[fit_idx], y[fit_idx], num_classes, seed)
                    probs = _softmax(_features(p_text[test_idx], p_image[test_idx]) @ coef.T + intercept)
                    losses[kind] -= np.log(probs[np.arange(len(test_idx)), y[test_idx]] + 1e-12).sum()
            self.kind = min(losses, key=losses.get)
        else:
            self.kind = "pool"
        self.coef, self.intercept, self.C = candidates[self.kind](p_text, p_image, y, num_classes, seed)
        return self

    def logits(self, p_text: np.ndarray, p_image: np.ndarray) -> np.ndarray:
        return _features(p_text, p_image) @ self.coef.T + self.intercept

    def contributions(self, p_text: np.ndarray, p_image: np.ndarray) -> dict[str, np.ndarray]:
        """Exact split of each class's fused logit: text + image + bias == logits."""
        n = p_text.shape[1]
        return {
            "text": np.log(p_text + EPS) @ self.coef[:, :n].T,
            "image": np.log(p_image + EPS) @ self.coef[:, n:].T,
            "bias": np.broadcast_to(self.intercept, (p_text.shape[0], n)).copy(),
        }

    def predict_proba(self, p_text: np.ndarray | None, p_image: np.ndarray | None,
                      has_text: np.ndarray, has_image: np.ndarray) -> np.ndarray:
        """Fused probabilities per row; rows missing a modality use the other one alone,
        rows with neither get NaN (the caller reports them)."""
        n_rows = len(has_text)
        num_classes = (p_text if p_text is not None else p_image).shape[1]
        out = np.full((n_rows, num_classes), np.nan, dtype="float64")
        if p_text is not None:
            out[has_text & ~has_image] = p_text[has_text & ~has_image]
        if p_image is not None:
            out[has_image & ~has_text] = p_image[has_image & ~has_text]
        both = has_text & has_image
        if both.any():
            out[both] = _softmax(self.logits(p_text[both], p_image[both])) if self.fitted else p_text[both]
        return out.astype("float32")

    def save(self, path: str | Path) -> None:
        data = {"kind": self.kind, "C": self.C,
                "coef": None if self.coef is None else self.coef.tolist(),
                "intercept": None if self.intercept is None else self.intercept.tolist()}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> "Fusion":
        data = json.loads(Path(path).read_text())
        if data["coef"] is None:
            return cls()
        return cls(np.array(data["coef"]), np.array(data["intercept"]), data.get("C"), data.get("kind"))
