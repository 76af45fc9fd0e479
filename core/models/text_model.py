"""Text classifiers in Keras 3 that take raw strings: the vectorizer lives inside the
saved model, so a bundle needs no separate preprocessing code to predict.

Two architectures, chosen with ``arch``:

- ``tfidf``: word 1–2-grams and character 2–5-grams, sublinear TF-IDF with L2
  normalisation per branch (the recipe that makes linear models strong on product
  titles), and one linear head per category level solved exactly by liblinear (the
  TF-IDF + LinearSVC baseline, inside a Keras model), its scores turned into honest
  probabilities by a temperature fitted on out-of-fold rows. A gradient-trained head
  on the same features scored below that baseline (macro-F1 0.818 vs 0.887 on Myntra's
  142 classes) and took 19 times as long.
- ``bilstm``: Embedding + bidirectional LSTM, the classic sequence model.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

from core.models.tf_setup import seed_everything  # noqa: I001  (must precede TensorFlow)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from core.models.options import DEFAULT_TEXT_ARCH, TEXT_ARCHS  # noqa: F401  (re-exported)


@keras.saving.register_keras_serializable(package="catalog_studio")
class SublinearTfidf(keras.layers.Layer):
    """Turns sparse term counts into L2-normalised (1 + log tf) * idf, like
    scikit-learn's TfidfVectorizer(sublinear_tf=True), so the head sees the
    features that linear text models are known to do well on."""

    def __init__(self, vocab_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.idf = self.add_weight(
            shape=(self.vocab_size,), initializer="ones", trainable=False, name="idf"
        )

    def compute_output_spec(self, counts):
        # TextVectorization reports a dense symbolic shape; at run time it is sparse.
        return keras.KerasTensor((None, self.vocab_size), dtype="float32", sparse=True)

    def call(self, counts):
        if not isinstance(counts, tf.SparseTensor):
            counts = tf.sparse.from_dense(counts)
        counts = tf.sparse.reshape(counts, [-1, self.vocab_size])
        rows, cols = counts.indices[:, 0], counts.indices[:, 1]
        values = (1.0 + tf.math.log(tf.cast(counts.values, "float32"))) * tf.gather(self.idf, cols)
        squares = tf.math.unsorted_segment_sum(values * values, rows, counts.dense_shape[0])
        values = values * tf.math.rsqrt(tf.gather(squares, rows) + 1e-12)
        return tf.SparseTensor(counts.indices, values, counts.dense_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size}


@keras.saving.register_keras_serializable(package="catalog_studio")
class TreeDecode(keras.layers.Layer):
    """Per-level probabilities in, probabilities over the tree's paths out:
    softmax_over_paths(sum_k w_k * log p_k[path's class at level k]) — the joint decode of
    core.models.tree.CategoryTree, inside the saved model, so a text model answers with
    valid paths only (and explanations see exactly what the classifier predicts)."""

    def __init__(self, label_class: list[list[int]], weights: list[float], eps: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.label_class = [[int(i) for i in level] for level in label_class]
        self.level_weights = [float(w) for w in weights]
        self.eps = float(eps)

    def call(self, levels):
        levels = levels if isinstance(levels, (list, tuple)) else [levels]
        z = 0.0
        for p, idx, w in zip(levels, self.label_class, self.level_weights):
            z = z + w * keras.ops.log(keras.ops.take(p, keras.ops.convert_to_tensor(idx, "int32"), axis=1) + self.eps)
        return keras.ops.softmax(z, axis=-1)

    def compute_output_shape(self, input_shape):
        return (None, len(self.label_class[0]))

    def get_config(self) -> dict:
        return {**super().get_config(), "label_class": self.label_class, "weights": self.level_weights,
                "eps": self.eps}


def _as_input(texts: Sequence[str]) -> tf.Tensor:
    """Keras fit/predict want a rank-2 string tensor (see PITFALLS)."""
    return tf.constant([str(t) for t in texts], dtype=tf.string)[:, None]


class TfidfFeaturizer:
    """Vocabularies and idf of the two n-gram branches (capped at the most frequent
    100k word and 200k character n-grams: PriceRunner's 22k titles have 67k and 197k, and
    cutting them to 60k / 120k cost half a point of accuracy). Fitted once, it turns texts
    into sparse features a single time, so each training epoch (and each fold of the
    out-of-fold fits) is a cheap sparse matrix product rather than string processing."""

    def __init__(self, max_word_tokens: int = 100_000, max_char_tokens: int = 200_000):
        self.branches = [
            # explicit names: auto-naming is per thread in Keras, and a training job on a
            # server thread was seen to hand out "text_vectorization" twice
            keras.layers.TextVectorization(max_tokens=max_word_tokens, split="whitespace", ngrams=2,
                                           output_mode="count", sparse=True, name="word_ngrams"),
            keras.layers.TextVectorization(max_tokens=max_char_tokens, split="character",
                                           ngrams=(2, 3, 4, 5), output_mode="count", sparse=True,
                                           name="char_ngrams"),
        ]
        self.tfidf: list[SublinearTfidf] = []

    def fit(self, texts: Sequence[str]) -> "TfidfFeaturizer":
        x = _as_input(texts)
        for vectorizer in self.branches:
            vectorizer.adapt(tf.data.Dataset.from_tensor_slices(x[:, 0]).batch(1024))
            vocab_size = vectorizer.vocabulary_size()
            doc_freq = np.zeros(vocab_size)
            for start in range(0, len(texts), 2048):
                counts = vectorizer(x[start:start + 2048])
                doc_freq += np.bincount(counts.indices[:, 1].numpy(), minlength=vocab_size)
            layer = SublinearTfidf(vocab_size, name=f"{vectorizer.name}_tfidf")
            layer.idf.assign((np.log((1 + len(texts)) / (1 + doc_freq)) + 1).astype("float32"))
            self.tfidf.append(layer)
        return self

    @property
    def dims(self) -> list[int]:
        return [layer.vocab_size for layer in self.tfidf]

    def transform(self, texts: Sequence[str]):
        """One scipy CSR matrix per branch (rows are L2-normalised TF-IDF)."""
        from scipy import sparse

        out = []
        for vectorizer, tfidf in zip(self.branches, self.tfidf):
            parts = []
            for start in range(0, len(texts), 2048):
                x = tfidf(vectorizer(_as_input(texts[start:start + 2048])))
                idx = x.indices.numpy()
                parts.append(sparse.csr_matrix((x.values.numpy(), (idx[:, 0], idx[:, 1])),
                                               shape=tuple(x.dense_shape.numpy())))
            out.append(sparse.vstack(parts).tocsr() if parts else sparse.csr_matrix((0, tfidf.vocab_size)))
        return out

    def __call__(self, inputs):
        """Symbolic: string input -> the branches' sparse features (for the saved model)."""
        return [tfidf(vectorizer(inputs)) for vectorizer, tfidf in zip(self.branches, self.tfidf)]


SOLVER_TOL = 3e-3  # liblinear's stopping tolerance: 5x faster than its 1e-4 default, same predictions on Myntra


def fit_linear_head(features, y: np.ndarray, num_classes: int, *, C: float = 1.0, tol: float = SOLVER_TOL,
                    workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest linear SVM (liblinear) on sparse TF-IDF: the exact convex fit that makes
    TF-IDF + LinearSVC the baseline to beat. Classes weighted by inverse frequency (rare
    classes count, which is what macro-F1 measures: +2.7 points on Myntra's 142 classes,
    accuracy unchanged). Returns (coef (classes, features), intercept); a class absent
    from `y` gets a margin it can never win with.

    One-vs-rest is one binary problem per class — the very problems liblinear solves in
    turn — so they are solved on `workers` threads (liblinear releases the GIL)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.svm import LinearSVC

    y = np.asarray(y, dtype="int64")
    coef, intercept = np.zeros((num_classes, features.shape[1]), "float32"), np.full(num_classes, -10.0, "float32")
    present = np.unique(y)
    if len(present) == 1:  # one class known at this level: it is certain
        intercept[present[0]] = 10.0
        return coef, intercept
    counts = np.bincount(y, minlength=num_classes)
    balanced = {int(c): len(y) / (len(present) * counts[c]) for c in present}  # class_weight="balanced"

    def solve(c: int) -> None:
        svm = LinearSVC(C=C, tol=tol, class_weight={True: balanced[c], False: 1.0}, max_iter=2000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning on near-separable rare classes
            svm.fit(features, y == c)
        coef[c], intercept[c] = svm.coef_[0], svm.intercept_[0]

    classes = [int(c) for c in present] if len(present) > 2 else [int(present[1])]
    with ThreadPoolExecutor(max(1, min(workers or os.cpu_count() or 1, 8, len(classes)))) as pool:
        list(pool.map(solve, classes))
    if len(present) == 2:  # one problem decides both classes: the other's scores are its mirror
        coef[present[0]], intercept[present[0]] = -coef[present[1]], -intercept[present[1]]
    return coef, intercept


DEFAULT_TEMPERATURE = 0.3  # of SVM margins, when no out-of-fold rows could calibrate it (tiny catalogues)


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, "float64")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype("float32")


def fit_temperature(margins: np.ndarray, y: np.ndarray) -> float:
    """The T that makes softmax(margins / T) honest on out-of-fold rows (max likelihood)."""
    from scipy.optimize import minimize_scalar

    keep = y >= 0
    m, yk = margins[keep].astype("float64"), y[keep]
    if len(yk) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        z = m / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(yk)), yk] - np.log(np.exp(z).sum(axis=1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5.0, 3.0), method="bounded").x))


def build_linear_head(dims: Sequence[int], levels: Sequence[tuple[np.ndarray, np.ndarray, float]]) -> keras.Model:
    """Sparse TF-IDF branches in, one softmax per level out, each level's weights
    `(coef, intercept, temperature)` written in (coef / T): the solver's model, in Keras.
    Two dense layers added == one dense layer over the concatenation, and it keeps both
    branches sparse."""
    inputs = [keras.Input((d,), sparse=True, name=f"tfidf_{i}") for i, d in enumerate(dims)]
    outputs = []
    for k, (coef, intercept, temperature) in enumerate(levels):
        name = "probabilities" if len(levels) == 1 else f"level_{k + 1}"
        dense, start = [], 0
        for i, d in enumerate(dims):
            layer = keras.layers.Dense(coef.shape[0], use_bias=i == 0, name=f"{name}_branch_{i}")
            layer.build((None, d))
            kernel = (coef[:, start:start + d].T / temperature).astype("float32")
            layer.set_weights([kernel, (intercept / temperature).astype("float32")] if i == 0 else [kernel])
            dense.append(layer(inputs[i]))
            start += d
        logits = keras.layers.Add(name=f"{name}_logits")(dense) if len(dense) > 1 else dense[0]
        outputs.append(keras.layers.Softmax(name=name)(logits))
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name="head")


def build_bilstm_head(vocab_size: int, num_classes: int, *, embed_dim: int = 96, units: int = 64,
                      dropout: float = 0.3) -> keras.Model:
    inputs = keras.Input((None,), dtype="int64", name="tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, mask_zero=True)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units))(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="head")


def bilstm_vectorizer(texts: Sequence[str], max_tokens: int = 30_000) -> keras.layers.TextVectorization:
    lengths = np.array([len(str(t).split()) for t in texts])
    seq_len = int(min(200, max(8, np.percentile(lengths, 95))))
    vectorizer = keras.layers.TextVectorization(max_tokens=max_tokens, output_sequence_length=seq_len)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(_as_input(texts)[:, 0]).batch(1024))
    return vectorizer


# Per-architecture training defaults, picked on the benchmark (bench/run_bench.py,
# bench/bench_tree.py). tfidf has no epochs: its head is solved exactly.
_TRAINING = {
    "tfidf": {"epochs": 0, "batch_size": 0, "learning_rate": 0.0, "min_steps": 0, "C": 1.0},
    "bilstm": {"epochs": 8, "batch_size": 32, "learning_rate": 2e-3, "min_steps": 200},
}


def _levels(y) -> list[np.ndarray]:
    """Targets as one int array per level (a flat y is one level); -1 = unknown."""
    if isinstance(y, (list, tuple)):
        return [np.asarray(level, dtype="int64") for level in y]
    return [np.asarray(y, dtype="int64")]


class TextModel:
    """scikit-learn-like wrapper: fit(texts, y) / predict_proba(texts).

    `y` is one class index per text, or (for a category tree) a list with one such array
    per level, -1 where a row does not know that level. tfidf learns one head per level;
    bilstm learns the deepest level only (callers sum it up the tree)."""

    def __init__(self, arch: str = DEFAULT_TEXT_ARCH, *, num_classes: int | Sequence[int] | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 learning_rate: float | None = None, seed: int = 0,
                 class_weight: str | None = None, C: float | None = None):
        if arch not in TEXT_ARCHS:
            raise ValueError(f"unknown text architecture {arch!r}; choose one of {', '.join(TEXT_ARCHS)}")
        defaults = _TRAINING[arch]
        self.arch = arch
        self.level_sizes = [num_classes] if isinstance(num_classes, int) else list(num_classes or [])
        self.epochs = epochs or defaults["epochs"]
        self.min_steps = defaults["min_steps"]
        self.batch_size = batch_size or defaults["batch_size"]
        self.learning_rate = learning_rate or defaults["learning_rate"]
        self.C = C or defaults.get("C", 1.0)
        self.seed = seed
        self.class_weight = class_weight
        self.model: keras.Model | None = None
        self.history: dict[str, list[float]] = {}
        self.solved: list[tuple[np.ndarray, np.ndarray]] = []  # tfidf: (coef, intercept) per level
        self.temperatures: list[float] = []
        self._featurizer: TfidfFeaturizer | None = None

    @property
    def num_classes(self) -> int | None:
        """Classes of the deepest level (what predict_proba returns)."""
        return self.level_sizes[-1] if self.level_sizes else None

    def fit(self, texts: Sequence[str], y, *, verbose: int = 0,
            callbacks: list | None = None, featurizer: "TfidfFeaturizer | None" = None,
            features=None, on_level=None) -> "TextModel":
        """`featurizer` (already fitted, e.g. on all training texts) and `features`
        (its transform of `texts`) let out-of-fold fits skip the string work.
        `on_level(k, levels)`: called before each level's solve (tfidf's progress)."""
        seed_everything(self.seed)
        levels = _levels(y)
        if not self.level_sizes:
            self.level_sizes = [int(level.max()) + 1 for level in levels]
        if self.arch == "tfidf":
            from scipy import sparse

            self._featurizer = featurizer or TfidfFeaturizer().fit(texts)
            features = features if features is not None else self._featurizer.transform(texts)
            x = sparse.hstack(features).tocsr()
            self.solved = []
            for k, (target, size) in enumerate(zip(levels, self.level_sizes)):
                if on_level is not None:
                    on_level(k + 1, len(levels))
                rows = np.flatnonzero(target >= 0)
                self.solved.append(fit_linear_head(x[rows], target[rows], size, C=self.C))
            self.temperatures = [DEFAULT_TEMPERATURE] * len(levels)
            self.model = None  # built by finalize (or on first predict, uncalibrated)
            return self
        self._fit_bilstm(texts, levels[-1], verbose=verbose, callbacks=callbacks)
        return self

    def margins(self, features) -> list[np.ndarray]:
        """tfidf: each level's raw scores (before temperature) for featurized texts, so
        out-of-fold temperatures need no Keras model."""
        from scipy import sparse

        x = sparse.hstack(features).tocsr()
        return [np.asarray(x @ coef.T) + intercept for coef, intercept in self.solved]

    def finalize(self, temperatures: Sequence[float] | None = None, tree=None) -> "TextModel":
        """The Keras model to save: each level's probabilities softmax(margins / T), and
        with a `tree` (core.models.tree.CategoryTree) its joint decode on top, so the model
        answers over the tree's paths (`tree.labels`) like a flat model does."""
        if temperatures is not None:
            self.temperatures = [float(t) for t in temperatures]
        inputs = keras.Input(shape=(1,), dtype="string", name="text")
        head = build_linear_head(self._featurizer.dims, [(c, b, t) for (c, b), t in
                                                         zip(self.solved, self.temperatures)])
        outputs = head(self._featurizer(inputs))
        if tree is not None:
            outputs = TreeDecode([idx.tolist() for idx in tree.label_class], tree.weights.tolist(),
                                 name="paths")(outputs)
            self.level_sizes = [len(tree.labels)]
        self.model = keras.Model(inputs, outputs, name=f"text_{self.arch}")
        return self

    def _fit_bilstm(self, texts: Sequence[str], y: np.ndarray, *, verbose: int, callbacks: list | None) -> None:
        rows = np.flatnonzero(y >= 0)
        texts, y = [texts[i] for i in rows], y[rows]
        self.level_sizes = self.level_sizes[-1:]
        inputs = keras.Input(shape=(1,), dtype="string", name="text")
        repeats = self.repeats_for(len(y))
        vectorizer = bilstm_vectorizer(texts)
        head = build_bilstm_head(vectorizer.vocabulary_size(), self.num_classes)
        x = np.tile(np.asarray(vectorizer(_as_input(texts))), (repeats, 1))
        outputs = head(vectorizer(inputs))
        head.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = head.fit(
            x, np.tile(y, repeats), epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
            class_weight=_class_weights(y, self.num_classes) if self.class_weight == "balanced" else None,
            verbose=verbose, callbacks=callbacks or [],
        )
        self.history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        self.model = keras.Model(inputs, outputs, name=f"text_{self.arch}")

    def repeats_for(self, n: int) -> int:
        """Small catalogues need more updates to converge: each epoch sees the rows
        this many times, so that training makes at least `min_steps` updates (cheaper
        than more epochs, each of which has a fixed cost)."""
        steps = self.epochs * steps_per_epoch(n, self.batch_size)
        return int(min(20, max(1, math.ceil(self.min_steps / steps))))

    def predict_levels(self, texts: Sequence[str], batch_size: int = 256) -> list[np.ndarray]:
        """Probabilities per level (one array for a flat model or a bilstm)."""
        if self.model is None and self.solved:
            self.finalize()
        if self.model is None:
            raise RuntimeError("TextModel is not fitted")
        if len(texts) == 0:
            return [np.zeros((0, n), dtype="float32") for n in self.level_sizes]
        parts: list[list[np.ndarray]] = [[] for _ in self.level_sizes]
        call = self._compiled_call()
        for i in range(0, len(texts), batch_size):
            out = call(_as_input(texts[i:i + batch_size]))
            for k, p in enumerate(out if isinstance(out, (list, tuple)) else [out]):
                parts[k].append(np.asarray(p))
        return [np.concatenate(p).astype("float32") for p in parts]

    def _compiled_call(self):
        """The model's forward pass as one traced graph (any batch size): calling the
        Keras model eagerly costs ~30 ms per title, the graph ~1 ms (measured, issue 13).
        Traced once per fitted model; a refit replaces `model` and so the graph."""
        if getattr(self, "_call_for", None) is not self.model:
            model = self.model
            self._call = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                                     input_signature=[tf.TensorSpec([None, 1], tf.string)])
            self._call_for = model
        return self._call

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Probabilities of the deepest level."""
        return self.predict_levels(texts, batch_size)[-1]

    def save(self, path: str | Path) -> None:
        self.model.save(str(path))

    @classmethod
    def load(cls, path: str | Path, arch: str = DEFAULT_TEXT_ARCH) -> "TextModel":
        model = keras.models.load_model(str(path))
        shapes = [tuple(o.shape) for o in model.outputs]
        self = cls(arch, num_classes=[int(s[-1]) for s in shapes])
        self.model = model
        return self


def _class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=num_classes)
    return {i: (len(y) / (num_classes * c) if c else 0.0) for i, c in enumerate(counts)}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
