"""Text classifiers in Keras 3 that take raw strings: the vectorizer lives inside the
saved model, so a bundle needs no separate preprocessing code to predict.

Two architectures, chosen with ``arch``:

- ``tfidf``: word 1–2-grams and character 2–5-grams, sublinear TF-IDF with L2
  normalisation per branch (the recipe that makes linear models strong on product
  titles), fed sparse into a small dense head. Fast and accurate on small catalogues.
- ``bilstm``: Embedding + bidirectional LSTM, the classic sequence model.
"""

from __future__ import annotations

import math
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


def _as_input(texts: Sequence[str]) -> tf.Tensor:
    """Keras fit/predict want a rank-2 string tensor (see PITFALLS)."""
    return tf.constant([str(t) for t in texts], dtype=tf.string)[:, None]


class TfidfFeaturizer:
    """Vocabularies and idf of the two n-gram branches. Fitted once, it turns texts
    into sparse features a single time, so each training epoch (and each fold of the
    out-of-fold fits) is a cheap sparse matrix product rather than string processing."""

    def __init__(self, max_word_tokens: int = 60_000, max_char_tokens: int = 120_000):
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


def _tile(matrix, repeats: int):
    from scipy import sparse

    return sparse.vstack([matrix] * repeats).tocsr() if repeats > 1 else matrix


def _to_tf_sparse(matrix) -> tf.SparseTensor:
    coo = matrix.tocoo()
    indices = np.stack([coo.row, coo.col], axis=1).astype("int64")
    return tf.sparse.reorder(tf.SparseTensor(indices, coo.data.astype("float32"), coo.shape))


def build_tfidf_head(dims: Sequence[int], num_classes: int, *, hidden: int = 0, dropout: float = 0.3,
                     l2: float = 0.0) -> keras.Model:
    """Sparse TF-IDF branches in, probabilities out. Two dense layers added == one
    dense layer over the concatenation, and it keeps both branches sparse."""
    inputs = [keras.Input((d,), sparse=True, name=f"tfidf_{i}") for i, d in enumerate(dims)]
    width = hidden or num_classes
    reg = keras.regularizers.L2(l2) if l2 else None
    x = keras.layers.Add()([keras.layers.Dense(width, use_bias=i == 0, kernel_regularizer=reg)(inp)
                            for i, inp in enumerate(inputs)])
    if hidden:
        x = keras.layers.ReLU()(x)
        x = keras.layers.Dropout(dropout)(x)
        x = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(x), name="head")


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


# Per-architecture training defaults, picked on the benchmark (bench/run_bench.py).
_TRAINING = {
    "tfidf": {"epochs": 12, "batch_size": 32, "learning_rate": 5e-3, "min_steps": 300},
    "bilstm": {"epochs": 8, "batch_size": 32, "learning_rate": 2e-3, "min_steps": 200},
}


class TextModel:
    """scikit-learn-like wrapper: fit(texts, y) / predict_proba(texts)."""

    def __init__(self, arch: str = DEFAULT_TEXT_ARCH, *, num_classes: int | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 learning_rate: float | None = None, hidden: int = 0, seed: int = 0,
                 class_weight: str | None = None):
        if arch not in TEXT_ARCHS:
            raise ValueError(f"unknown text architecture {arch!r}; choose one of {', '.join(TEXT_ARCHS)}")
        defaults = _TRAINING[arch]
        self.arch = arch
        self.num_classes = num_classes
        self.epochs = epochs or defaults["epochs"]
        self.min_steps = defaults["min_steps"]
        self.batch_size = batch_size or defaults["batch_size"]
        self.learning_rate = learning_rate or defaults["learning_rate"]
        self.hidden = hidden
        self.seed = seed
        self.class_weight = class_weight
        self.model: keras.Model | None = None
        self.history: dict[str, list[float]] = {}

    def fit(self, texts: Sequence[str], y: np.ndarray, *, verbose: int = 0,
            callbacks: list | None = None, featurizer: "TfidfFeaturizer | None" = None,
            features=None) -> "TextModel":
        """`featurizer` (already fitted, e.g. on all training texts) and `features`
        (its transform of `texts`) let out-of-fold fits skip the string work."""
        seed_everything(self.seed)
        y = np.asarray(y, dtype="int64")
        self.num_classes = self.num_classes or int(y.max()) + 1
        inputs = keras.Input(shape=(1,), dtype="string", name="text")
        repeats = self.repeats_for(len(y))
        if self.arch == "tfidf":
            featurizer = featurizer or TfidfFeaturizer().fit(texts)
            features = features if features is not None else featurizer.transform(texts)
            head = build_tfidf_head(featurizer.dims, self.num_classes, hidden=self.hidden)
            x = [_to_tf_sparse(_tile(m, repeats)) for m in features]
            outputs = head(featurizer(inputs))
        else:
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
        return self

    def repeats_for(self, n: int) -> int:
        """Small catalogues need more updates to converge: each epoch sees the rows
        this many times, so that training makes at least `min_steps` updates (cheaper
        than more epochs, each of which has a fixed cost)."""
        steps = self.epochs * steps_per_epoch(n, self.batch_size)
        return int(min(20, max(1, math.ceil(self.min_steps / steps))))

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("TextModel is not fitted")
        if len(texts) == 0:
            return np.zeros((0, self.num_classes), dtype="float32")
        out = [
            self.model(_as_input(texts[i:i + batch_size]), training=False).numpy()
            for i in range(0, len(texts), batch_size)
        ]
        return np.concatenate(out).astype("float32")

    def save(self, path: str | Path) -> None:
        self.model.save(str(path))

    @classmethod
    def load(cls, path: str | Path, arch: str = DEFAULT_TEXT_ARCH) -> "TextModel":
        model = keras.models.load_model(str(path))
        self = cls(arch, num_classes=int(model.output_shape[-1]))
        self.model = model
        return self


def _class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=num_classes)
    return {i: (len(y) / (num_classes * c) if c else 0.0) for i, c in enumerate(counts)}


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
