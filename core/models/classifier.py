"""Load a bundle once and predict: `Classifier.load(dir).predict(text=…, image=…)`.

Every prediction carries three probability vectors over the same labels — fused,
text alone, image alone — so the app can show them side by side and flag when the
description and the photo disagree. The labels are the category paths the model knows
("A >> B >> C"; a flat model's are plain class names): each level's answer and its
confidence are read off the same vector (`Prediction.levels`), so they always agree.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from core.common.errors import InputError
from core.common.images import letterbox, open_image
from core.common.category_path import join_path, leaf_name
from core.models import bundle
from core.models.fusion import Fusion
from core.models.tree import CategoryTree


@dataclass
class Prediction:
    labels: list[str]
    fused: np.ndarray | None
    text: np.ndarray | None
    image: np.ndarray | None
    model_version: str = ""
    tree: CategoryTree | None = None  # None: flat labels

    @property
    def depth(self) -> int:
        return self.tree.depth if self.tree is not None else 1

    def levels(self, which: str = "fused") -> list[tuple[str, float | None]]:
        """The predicted path level by level: (name, probability that this level is
        right), "" and None below where the path stops (a rare leaf backed off)."""
        probs = getattr(self, which)
        if probs is None:
            return []
        label = self.labels[int(np.argmax(probs))]
        if self.tree is None or self.tree.is_flat:
            return [(label, float(np.max(probs)))]
        names = self.tree.path_levels(label)
        return list(zip(names, self.tree.level_confidences(probs, label)))

    def path_at(self, min_confidence: float = 0.0, which: str = "fused") -> str | None:
        """The predicted path, stopped at the deepest level whose confidence is at least
        `min_confidence` (None when not even the top level is)."""
        levels = self.levels(which)
        kept = 0
        for name, conf in levels:
            if not name or conf is None or conf < min_confidence:
                break
            kept += 1
        return join_path(name for name, _ in levels[:kept]) or None

    @property
    def leaf(self) -> str | None:
        """The deepest level's name of the predicted path (a flat model: its label)."""
        return self.leaf_of("fused")

    def leaf_of(self, which: str = "fused") -> str | None:
        """The deepest name of `which` model's (fused, text, image) top path: what the CLI
        and the HTTP API call a label (a flat model: the label itself)."""
        label = self._top(getattr(self, which))[0]
        if label is None or self.tree is None or self.tree.is_flat:
            return label
        return leaf_name(label)

    def _top(self, probs: np.ndarray | None) -> tuple[str | None, float | None]:
        if probs is None:
            return None, None
        i = int(np.argmax(probs))
        return self.labels[i], float(probs[i])

    @property
    def label(self) -> str | None:
        return self._top(self.fused)[0]

    @property
    def confidence(self) -> float | None:
        return self._top(self.fused)[1]

    @property
    def text_label(self) -> str | None:
        return self._top(self.text)[0]

    @property
    def image_label(self) -> str | None:
        return self._top(self.image)[0]

    @property
    def disagree(self) -> bool:
        """Both models present and their top classes differ."""
        return self.text is not None and self.image is not None and self.text_label != self.image_label

    def top(self, k: int = 3, which: str = "fused") -> list[tuple[str, float]]:
        probs = getattr(self, which)
        if probs is None:
            return []
        order = np.argsort(-probs)[:k]
        return [(self.labels[i], float(probs[i])) for i in order]

    def as_dict(self) -> dict:
        as_map = lambda p: None if p is None else {l: float(v) for l, v in zip(self.labels, p)}  # noqa: E731
        out = {"model_version": self.model_version, "label": self.label, "confidence": self.confidence,
               "text_label": self.text_label, "image_label": self.image_label, "disagree": self.disagree,
               "fused": as_map(self.fused), "text": as_map(self.text), "image": as_map(self.image)}
        if self.depth > 1:
            out["levels"] = [{"name": name, "confidence": conf} for name, conf in self.levels()]
        return out


@dataclass
class BatchPrediction:
    labels: list[str]
    fused: np.ndarray  # (n, classes); NaN rows where a row had neither text nor image
    text: np.ndarray
    image: np.ndarray
    has_text: np.ndarray
    has_image: np.ndarray
    model_version: str = ""
    extra: dict = field(default_factory=dict)
    tree: CategoryTree | None = None

    def row(self, i: int) -> Prediction:
        return Prediction(self.labels, self.fused[i] if (self.has_text[i] or self.has_image[i]) else None,
                          self.text[i] if self.has_text[i] else None,
                          self.image[i] if self.has_image[i] else None, self.model_version, self.tree)


class Classifier:
    """A loaded bundle. Thread-safe: Keras models are not, so inference is serialised."""

    def __init__(self, labels: list[str], text_model=None, image_model=None, fusion: Fusion | None = None,
                 metadata: bundle.BundleMetadata | None = None, path: Path | None = None,
                 tree: CategoryTree | None = None):
        self.labels = labels
        self.tree = tree or CategoryTree.flat(labels)
        self.text_model = text_model
        self.image_model = image_model
        self.fusion = fusion or Fusion()
        self.metadata = metadata or bundle.BundleMetadata()
        self.path = path
        self.verified = False  # set by load(): the files matched the bundle's manifest
        self._lock = threading.RLock()

    @property
    def version(self) -> str:
        return self.metadata.version

    @classmethod
    def load(cls, model_dir: str | Path) -> "Classifier":
        model_dir = Path(model_dir)
        bundle.require_bundle(model_dir)
        try:  # before any file is read: a half-written or changed bundle is refused
            verified = bundle.verify_bundle(model_dir)
        except bundle.BundleError as exc:
            raise InputError(str(exc)) from None
        try:
            metadata = bundle.read_metadata(model_dir)
            bundle.check_format(metadata, model_dir)
        except bundle.BundleError as exc:
            raise InputError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{model_dir}: unreadable {bundle.METADATA} ({exc})") from None
        from core.models.image_model import ImageModel
        from core.models.text_model import TextModel

        labels = bundle.read_labels(model_dir)
        text = image = None
        if (model_dir / bundle.TEXT_MODEL).exists():
            text = TextModel.load(model_dir / bundle.TEXT_MODEL, arch=metadata.text_arch)
        if (model_dir / bundle.IMAGE_MODEL).exists():
            if not metadata.backbone:
                raise InputError(f"{model_dir}: {bundle.METADATA} names no backbone for its image model")
            image = ImageModel.load(model_dir / bundle.IMAGE_MODEL, backbone=metadata.backbone)
        fusion = Fusion.load(model_dir / bundle.FUSION) if (model_dir / bundle.FUSION).exists() else Fusion()
        tree = None
        if (model_dir / bundle.TREE).exists():
            tree = CategoryTree.from_dict(json.loads((model_dir / bundle.TREE).read_text()))
            if tree.labels != labels:
                raise InputError(f"{model_dir}: {bundle.TREE} and {bundle.LABELS} disagree; train the model again")
        loaded = cls(labels, text, image, fusion, metadata, model_dir, tree)
        loaded.verified = verified  # False: saved before manifests, its files could not be checked
        return loaded

    def save(self, model_dir: str | Path) -> Path:
        with bundle.atomic_directory(model_dir) as tmp:
            bundle.write_json(tmp / bundle.LABELS, self.labels)
            if self.text_model is not None:
                self.text_model.save(tmp / bundle.TEXT_MODEL)
            if self.image_model is not None:
                self.image_model.save(tmp / bundle.IMAGE_MODEL)
            self.fusion.save(tmp / bundle.FUSION)
            bundle.write_json(tmp / bundle.TREE, self.tree.to_dict())
            bundle.write_metadata(tmp, self.metadata)
        self.path = Path(model_dir).resolve()
        return self.path

    # -- prediction ---------------------------------------------------------------------
    def _text_probs(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        has = np.array([bool(t and str(t).strip()) for t in texts], dtype=bool)
        probs = np.zeros((len(texts), len(self.labels)), dtype="float32")
        if self.text_model is not None and has.any():
            probs[has] = self.text_model.predict_proba([str(texts[i]) for i in np.flatnonzero(has)])
        else:
            has[:] = False
        return probs, has

    def predict(self, text: str | None = None, image=None) -> Prediction:
        """One product. `image` may be a path, bytes, a file object or a PIL image;
        a bad image raises InputError (callers show its one-line message)."""
        if image is not None and not hasattr(image, "mode"):
            image = open_image(image, what="image")
        with self._lock:
            p_text, has_text = self._text_probs([text or ""])
            p_image = np.zeros_like(p_text)
            has_image = np.array([image is not None and self.image_model is not None])
            if has_image[0]:
                p_image[0] = self.image_model.predict_proba_pixels(letterbox(image)[None])[0]
        if not (has_text[0] or has_image[0]):
            raise InputError("nothing to classify: give a description or an image"
                             + ("" if self.image_model is not None else " (this model has no image part)"))
        return self._batch(p_text, has_text, p_image, has_image).row(0)

    def predict_batch(self, texts: Sequence[str], image_paths: Sequence[Path | None] | None = None,
                      *, progress: bool = False, cache=None, images: Sequence | None = None) -> BatchPrediction:
        """Many products; images are read from files and their embeddings cached, or given
        decoded (`images`: PIL images or None, e.g. photos just uploaded: no second decode)."""
        n = len(texts)
        image_paths = list(image_paths) if image_paths is not None else [None] * n
        with self._lock:
            p_text, has_text = self._text_probs(texts)
            p_image = np.zeros_like(p_text)
            has_image = np.zeros(n, dtype=bool)
            if self.image_model is not None and images is not None:
                rows = [i for i, im in enumerate(images) if im is not None]
                for start in range(0, len(rows), 32):
                    part = rows[start:start + 32]
                    pixels = np.stack([letterbox(images[i]) for i in part])
                    p_image[part] = self.image_model.predict_proba_pixels(pixels)
                has_image[rows] = True
            elif self.image_model is not None and any(p is not None for p in image_paths):
                emb, has_image = self.image_model.embed(image_paths, cache=cache, progress=progress)
                if has_image.any():
                    p_image[has_image] = self.image_model.predict_proba_embeddings(emb[has_image])
        return self._batch(p_text, has_text, p_image, has_image)

    def _batch(self, p_text, has_text, p_image, has_image) -> BatchPrediction:
        fused = self.fusion.predict_proba(p_text, p_image, has_text, has_image)
        return BatchPrediction(self.labels, fused, p_text, p_image, has_text, has_image, self.version,
                               tree=self.tree)
