"""The category tree a model learned, and the joint decode that keeps predictions on it.

Each level k of the tree has its own classifier (text and photo), whose classes are
*prefix paths* ("Apparel >> Topwear"), so two nodes of the same name under different
parents stay apart. A prediction is never a combination of level answers that does
not exist: the decode scores every path seen in training (the `labels`),

    log q(path) = sum_k  w_k * log p_k(path's class at level k)

and normalises over those paths only. The weights w are fitted on out-of-fold
predictions (so confidences mean what they say); with one level this is plain
temperature scaling of a flat classifier, which is what a flat model is.

Rare nodes can back off to their parent: with `min_rows` > 1, a node with fewer training
rows is not a class of its level; its rows train that level as "stops at the parent"
(the parent's own path as the class), so the model predicts "Home >> Bed Linen" for a
product whose leaf it has seen once. Measured, that costs more than it gives (see
`from_paths`), so by default every leaf is kept and leans on its parents in the decode;
`predicted_path` still stops at the parent wherever the leaf is unsure (--min-confidence).

Partial paths (a row labelled "Apparel" where the tree goes deeper, e.g. a reviewer who
knew only the top level) train the levels they have and nothing below.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from core.common.category_path import join_path, path_parts

MIN_ROWS = 1  # a node with fewer training rows backs off to its parent; 1: none does (see from_paths)
EPS = 1e-7


@dataclass
class CategoryTree:
    """`labels`: the paths a prediction can be (sorted); `levels[k-1]`: the classes of
    level k; `label_class[k-1][i]`: label i's class index at level k."""

    labels: list[str]
    levels: list[list[str]]
    weights: np.ndarray = field(default_factory=lambda: np.ones(0))
    min_rows: int = MIN_ROWS

    def __post_init__(self) -> None:
        if len(self.weights) != self.depth:
            self.weights = np.ones(self.depth)
        index = [{name: i for i, name in enumerate(level)} for level in self.levels]
        self.label_class = [np.array([index[k][self.class_at(label, k + 1)] for label in self.labels])
                            for k in range(self.depth)]

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def is_flat(self) -> bool:
        return self.depth == 1

    @staticmethod
    def class_at(path: str, level: int) -> str:
        """A complete path's class at `level`: its prefix, or itself where it stops above."""
        return join_path(path_parts(path)[:level])

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_paths(cls, paths: Sequence[str], *, min_rows: int = MIN_ROWS) -> "CategoryTree":
        """The tree of the training rows' paths, rare nodes backed off (see the module).

        Back-off costs what it gives up: on Myntra's 3-level tree (bench/bench_tree.py,
        level-3 macro-F1 against the TF-IDF + LinearSVC reference's 0.833) min_rows=3 gave
        0.812, 2 gave 0.835 and 1 (no back-off) 0.851; on Flipkart, where most leaves have
        one to three products, backing off singletons lost 10 points of level-3 macro-F1
        to the reference. A rare leaf already leans on its parents in the decode (their
        heads learn from all its siblings), so the default keeps every leaf; the trainer's
        `min_leaf_rows` turns back-off on."""
        targets, labels = _targets(paths, min_rows)
        complete = sorted({label for label in labels if label is not None})
        if not complete:
            raise ValueError("no complete category path to learn")
        return cls(complete, [sorted({c for c in level if c is not None}) for level in targets], min_rows=min_rows)

    def targets(self, paths: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Per level, each row's class index (-1: the row does not know that level, or
        its class is not in this tree); and each row's label index (-1: not a label)."""
        level_names, label_names = _targets(paths, self.min_rows, depth=self.depth)
        per_level = []
        for k, names in enumerate(level_names):
            index = {name: i for i, name in enumerate(self.levels[k])}
            per_level.append(np.array([index.get(n, -1) if n is not None else -1 for n in names], dtype="int64"))
        index = {name: i for i, name in enumerate(self.labels)}
        return per_level, np.array([index.get(n, -1) if n is not None else -1 for n in label_names], dtype="int64")

    # -- decoding ------------------------------------------------------------------------
    def scores(self, level_probs: Sequence[np.ndarray]) -> np.ndarray:
        """Unnormalised log q over labels (before the weights), per level: (levels, n, labels)."""
        return np.stack([np.log(np.asarray(p, "float64")[:, idx] + EPS)
                         for p, idx in zip(level_probs, self.label_class)])

    def decode(self, level_probs: Sequence[np.ndarray], weights: np.ndarray | None = None) -> np.ndarray:
        """Probabilities over `labels` (rows sum to 1) from each level's probabilities."""
        w = self.weights if weights is None else weights
        z = np.tensordot(w, self.scores(level_probs), axes=1)
        z -= z.max(axis=1, keepdims=True)
        q = np.exp(z)
        return (q / q.sum(axis=1, keepdims=True)).astype("float32")

    def level_probs(self, label_probs: np.ndarray) -> list[np.ndarray]:
        """Label probabilities summed up the tree: each level's class probabilities."""
        out = []
        for k, idx in enumerate(self.label_class):
            p = np.zeros((label_probs.shape[0], len(self.levels[k])), "float32")
            np.add.at(p.T, idx, np.asarray(label_probs, "float32").T)
            out.append(p)
        return out

    def fit_weights(self, level_probs: Sequence[np.ndarray], y: np.ndarray) -> "CategoryTree":
        """The decode's weights, fitted on out-of-fold rows (y = label index) to make every
        level right, not only the whole path: maximum of sum_k log q(true node at level k),
        the probability the decode puts under the true node of each level. (Fitting the
        path's likelihood alone let the leaf head outvote the level-1 head: on Myntra it
        cost 0.6 points of level-1 accuracy against the per-level baseline.)"""
        from scipy.optimize import minimize

        keep = y >= 0
        if keep.sum() < 2:
            return self
        s = self.scores([np.asarray(p)[keep] for p in level_probs])  # (levels, n, labels)
        yk = y[keep]
        # masks[k][i, l]: label l shares row i's true node at level k
        masks = [idx[None, :] == idx[yk][:, None] for idx in self.label_class]

        def loss(w):
            z = np.tensordot(w, s, axes=1)
            z = z - z.max(axis=1, keepdims=True)
            q = np.exp(z)
            q /= q.sum(axis=1, keepdims=True)
            mean_s = np.einsum("nl,knl->kn", q, s)  # E_q[s_j] per row
            value, grad = 0.0, np.zeros(len(w))
            for mask in masks:
                qm = q * mask
                mass = qm.sum(axis=1) + 1e-12
                value -= np.log(mass).mean()
                grad -= (np.einsum("nl,knl->kn", qm, s) / mass - mean_s).mean(axis=1)
            return value, grad

        result = minimize(loss, np.ones(self.depth) / max(1, self.depth) ** 0.5, jac=True, method="L-BFGS-B",
                          bounds=[(0.0, 20.0)] * self.depth)
        if result.success or result.fun < loss(self.weights)[0]:
            self.weights = np.asarray(result.x, "float64")
        return self

    # -- reading a prediction ------------------------------------------------------------
    def path_levels(self, label: str) -> list[str]:
        """The names along a label's path, one per level ("" below where it stops)."""
        parts = path_parts(label)
        return parts + [""] * (self.depth - len(parts))

    def level_confidences(self, label_probs: np.ndarray, label: str) -> list[float | None]:
        """For one row: the probability that each level of `label` is right (the mass of
        every label sharing that prefix); None below where `label` stops."""
        i = self.labels.index(label)
        stops = len(path_parts(label))
        out: list[float | None] = []
        for k, idx in enumerate(self.label_class):
            out.append(float(label_probs[idx == idx[i]].sum()) if k < stops else None)
        return out

    def prefixes(self) -> list[str]:
        """Every node of the tree, as a path (for pickers: a reviewer may stop at any)."""
        return sorted({join_path(path_parts(label)[:k]) for label in self.labels
                       for k in range(1, len(path_parts(label)) + 1)})

    # -- saving --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"labels": self.labels, "levels": self.levels, "weights": [float(w) for w in self.weights],
                "min_rows": self.min_rows}

    @classmethod
    def from_dict(cls, data: dict) -> "CategoryTree":
        return cls(list(data["labels"]), [list(level) for level in data["levels"]],
                   np.asarray(data.get("weights") or [], "float64"), int(data.get("min_rows", MIN_ROWS)))

    @classmethod
    def flat(cls, labels: Sequence[str]) -> "CategoryTree":
        """A one-level tree: what a bundle saved before trees is."""
        return cls(list(labels), [list(labels)])


def _targets(paths: Sequence[str | None], min_rows: int, depth: int | None = None):
    """Per level each row's class name (None: unknown), and each row's label (None: the
    row is partial, it only trains the levels it has). See the module docstring."""
    parts = [path_parts(p) if p is not None else [] for p in paths]
    depth = depth or max((len(p) for p in parts), default=0)
    counts = Counter(tuple(p[:k]) for p in parts for k in range(1, len(p) + 1))
    extended = {tuple(p[:k]) for p in parts for k in range(1, len(p))}  # nodes that have children
    levels: list[list[str | None]] = [[] for _ in range(depth)]
    labels: list[str | None] = []
    for p in parts:
        p = p[:depth]
        eff = list(p[:1])  # the top level never backs off (a flat model keeps its rare classes)
        for k in range(2, len(p) + 1):
            if counts[tuple(p[:k])] < min_rows:
                break
            eff = list(p[:k])
        complete = bool(p) and tuple(p) not in extended
        known = depth if complete else len(p)
        for k in range(depth):
            levels[k].append(join_path(eff[:k + 1]) if k < known and p else None)
        labels.append(join_path(eff) if complete else None)
    return levels, labels
