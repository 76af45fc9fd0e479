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

import numpy as np

from core.tf_setup import seed_everything  # noqa: I001  (must precede TensorFlow)
import keras
import tensorflow as tf

TEXT_ARCHS = ("tfidf", "bilstm")
DEFAULT_TEXT_ARCH = "tfidf"


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


def _tfidf_branch(inputs, texts: tf.Tensor, *, split: str, ngrams, max_tokens: int):
    vectorizer = keras.layers.TextVectorization(
        max_tokens=max_tokens, split=split, ngrams=ngrams, output_mode="count", sparse=True
    )
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts[:, 0]).batch(1024))
    vocab_size = vectorizer.vocabulary_size()
    counts = vectorizer(texts)
    doc_freq = np.bincount(counts.indices[:, 1].numpy(), minlength=vocab_size)
    n = int(texts.shape[0])
    tfidf = SublinearTfidf(vocab_size)
    tfidf.idf.assign((np.log((1 + n) / (1 + doc_freq)) + 1).astype("float32"))
    return tfidf(vectorizer(inputs))


def build_tfidf_model(
    texts: tf.Tensor, num_classes: int, *, hidden: int = 0,
    max_word_tokens: int = 60_000, max_char_tokens: int = 120_000, dropout: float = 0.3,
) -> keras.Model:
    """Vocabularies and idf are fitted on ``texts`` here; the head is trained later."""
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    words = _tfidf_branch(inputs, texts, split="whitespace", ngrams=2, max_tokens=max_word_tokens)
    chars = _tfidf_branch(inputs, texts, split="character", ngrams=(2, 3, 4, 5), max_tokens=max_char_tokens)
    # Two dense layers added == one dense layer over the concatenation, and it keeps
    # both branches sparse (Concatenate would densify).
    width = hidden or num_classes
    x = keras.layers.Add()([keras.layers.Dense(width)(words), keras.layers.Dense(width, use_bias=False)(chars)])
    if hidden:
        x = keras.layers.ReLU()(x)
        x = keras.layers.Dropout(dropout)(x)
        x = keras.layers.Dense(num_classes)(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs, name="text_tfidf")


def build_bilstm_model(
    texts: tf.Tensor, num_classes: int, *, max_tokens: int = 30_000, embed_dim: int = 96,
    units: int = 64, dropout: float = 0.3,
) -> keras.Model:
    lengths = np.array([len(t.split()) for t in texts[:, 0].numpy().astype(str)])
    seq_len = int(min(200, max(8, np.percentile(lengths, 95))))
    vectorizer = keras.layers.TextVectorization(max_tokens=max_tokens, output_sequence_length=seq_len)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts[:, 0]).batch(1024))
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    x = vectorizer(inputs)
    x = keras.layers.Embedding(vectorizer.vocabulary_size(), embed_dim, mask_zero=True)(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units))(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="text_bilstm")


# Per-architecture training defaults, picked on the benchmark (bench/run_bench.py).
_TRAINING = {
    "tfidf": {"epochs": 12, "batch_size": 32, "learning_rate": 5e-3},
    "bilstm": {"epochs": 8, "batch_size": 32, "learning_rate": 2e-3},
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
        self.batch_size = batch_size or defaults["batch_size"]
        self.learning_rate = learning_rate or defaults["learning_rate"]
        self.hidden = hidden
        self.seed = seed
        self.class_weight = class_weight
        self.model: keras.Model | None = None
        self.history: dict[str, list[float]] = {}

    def fit(self, texts: Sequence[str], y: np.ndarray, *, verbose: int = 0,
            callbacks: list | None = None) -> "TextModel":
        seed_everything(self.seed)
        y = np.asarray(y, dtype="int64")
        self.num_classes = self.num_classes or int(y.max()) + 1
        x = _as_input(texts)
        if self.arch == "tfidf":
            self.model = build_tfidf_model(x, self.num_classes, hidden=self.hidden)
        else:
            self.model = build_bilstm_model(x, self.num_classes)
        self.model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"],
        )
        history = self.model.fit(
            x, y, epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
            class_weight=_class_weights(y, self.num_classes) if self.class_weight == "balanced" else None,
            verbose=verbose, callbacks=callbacks or [],
        )
        self.history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        return self

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
