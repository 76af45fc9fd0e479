"""The image classifier: a frozen pretrained backbone and a small head trained on its
embeddings. Training only the head on cached embeddings is what makes retraining take
seconds; the saved model still nests the backbone, so a bundle predicts from pixels
with nothing else to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from core.models.tf_setup import seed_everything  # noqa: I001  (must precede TensorFlow)

# isort: split
import keras
import numpy as np
import tensorflow as tf

from core.models.backbones import DEFAULT_BACKBONE, IMAGE_SIZE, backbone_fingerprint, backbone_spec, build_backbone
from core.models.embeddings import EmbeddingCache, embed_images, load_model_input

MIN_STEPS = 1500


def build_head(dim: int, num_classes: int, embeddings: np.ndarray, *, hidden: int = 256,
               dropout: float = 0.3, l2: float = 1e-3) -> keras.Model:
    """Standardise (statistics from the training embeddings), one small hidden layer
    with dropout, softmax. On Flipkart the hidden layer beat a linear probe."""
    norm = keras.layers.Normalization(name="standardize")
    norm.adapt(embeddings)
    inputs = keras.Input((dim,), name="embedding")
    x = norm(inputs)
    x = keras.layers.Dropout(dropout)(x)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=keras.regularizers.L2(l2))(x)
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities",
                                 kernel_regularizer=keras.regularizers.L2(l2))(x)
    return keras.Model(inputs, outputs, name="head")


class ImageModel:
    """scikit-learn-like: fit on embeddings, predict_proba on embeddings or pixels."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, *, num_classes: int | None = None,
                 weights: str | None = "imagenet", epochs: int = 10, batch_size: int = 32,
                 learning_rate: float = 1e-3, hidden: int = 256, seed: int = 0):
        self.spec = backbone_spec(backbone)
        self.num_classes = num_classes
        self.weights = weights
        self.epochs, self.batch_size, self.learning_rate, self.seed = epochs, batch_size, learning_rate, seed
        self.hidden = hidden
        self._backbone: keras.Model | None = None
        self._encode = None
        self.head: keras.Model | None = None
        self.history: dict[str, list[float]] = {}

    @property
    def backbone(self) -> keras.Model:
        if self._backbone is None:
            self._backbone = build_backbone(self.spec.name, weights=self.weights)
        return self._backbone

    @property
    def cache_key(self) -> str:
        """Embeddings are cached per backbone *and* its weights."""
        return f"{self.spec.name}@{backbone_fingerprint(self.backbone)}"

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Backbone forward pass as a compiled graph: a plain eager call costs several
        times more per image, which matters for single-product latency."""
        if self._encode is None:
            backbone = self.backbone
            self._encode = tf.function(
                lambda x: backbone(x, training=False), reduce_retracing=True,
                input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
        return self._encode(tf.convert_to_tensor(pixels, tf.float32)).numpy()

    def embed(self, paths: Sequence[Path | None], *, cache: EmbeddingCache | None = None,
              flip: bool = False, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of image files (cached); flip=True embeds mirror images, the
        augmentation the head is trained with."""
        return embed_images(paths, self.encode, self.spec.dim, self.cache_key, cache=cache, flip=flip,
                            progress=progress)

    def fit(self, embeddings: np.ndarray, y: np.ndarray, *, flipped: np.ndarray | None = None,
            verbose: int = 0, callbacks: list | None = None) -> "ImageModel":
        """`flipped`: embeddings of the same images mirrored, added as extra examples."""
        seed_everything(self.seed)
        y = np.asarray(y, dtype="int64")
        if flipped is not None:
            embeddings, y = np.vstack([embeddings, flipped]), np.concatenate([y, y])
        self.num_classes = self.num_classes or int(y.max()) + 1
        self.head = build_head(embeddings.shape[1], self.num_classes, embeddings, hidden=self.hidden)
        # Each epoch has a fixed cost; small sets repeat their rows within an epoch instead
        # of running many epochs, so training always makes about MIN_STEPS updates.
        repeats = int(min(20, max(1, np.ceil(MIN_STEPS / (self.epochs * np.ceil(len(y) / self.batch_size))))))
        embeddings, y = np.tile(embeddings, (repeats, 1)), np.tile(y, repeats)
        self.head.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = self.head.fit(embeddings, y, epochs=self.epochs, batch_size=self.batch_size,
                                shuffle=True, verbose=verbose, callbacks=callbacks or [])
        self.history = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        return self

    def predict_proba_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        if len(embeddings) == 0:
            return np.zeros((0, self.num_classes), dtype="float32")
        return np.asarray(self.head(embeddings, training=False), dtype="float32")

    def predict_proba_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """pixels: (n, 224, 224, 3) letterboxed raw RGB."""
        return self.predict_proba_embeddings(self.encode(pixels))

    def finetune(self, paths: Sequence[Path], y: np.ndarray, *, epochs: int = 3, learning_rate: float = 1e-4,
                 verbose: int = 0, callbacks: list | None = None) -> "ImageModel":
        """Unfreeze the backbone's top block (from `spec.top_block` on, batch-norm layers
        kept frozen) and train it with the fitted head on pixels, mirrored at random.
        Call after fit(); embeddings of the changed backbone get a new cache key."""
        if self.head is None:
            raise RuntimeError("fit the head on embeddings before fine-tuning")
        seed_everything(self.seed)
        backbone = self.backbone
        backbone.trainable = True
        names = [layer.name for layer in backbone.layers]
        start = names.index(self.spec.top_block)
        for i, layer in enumerate(backbone.layers):
            layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        model = self.full_model()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        history = model.fit(_PixelBatches(list(paths), np.asarray(y, "int64"), self.batch_size, self.seed),
                            epochs=epochs, verbose=verbose, callbacks=callbacks or [])
        backbone.trainable = False
        self._encode = None  # recompile the forward pass with the new weights
        self.history.update({f"finetune_{k}": [float(v) for v in vs] for k, vs in history.history.items()})
        return self

    def full_model(self) -> keras.Model:
        """Pixels in, probabilities out, with the backbone nested as layer "backbone"."""
        inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
        return keras.Model(inputs, self.head(self.backbone(inputs)), name="image_model")

    def save(self, path: str | Path) -> None:
        self.full_model().save(str(path))

    @classmethod
    def load(cls, path: str | Path, backbone: str) -> "ImageModel":
        full = keras.models.load_model(str(path))
        self = cls(backbone, num_classes=int(full.output_shape[-1]))
        self._backbone, self.head = full.get_layer("backbone"), full.get_layer("head")
        return self


class _PixelBatches(keras.utils.PyDataset):
    """Letterboxed images read batch by batch (a catalogue may not fit in memory),
    each mirrored with probability 1/2."""

    def __init__(self, paths: list[Path], y: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.paths, self.y, self.batch_size = paths, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(paths))

    def __len__(self) -> int:
        return (len(self.paths) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        flips = self.rng.random(len(rows)) < 0.5
        x = np.stack([load_model_input(self.paths[i], flip=bool(f)) for i, f in zip(rows, flips)])
        return x, self.y[rows]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.paths))
