"""Blur-masker image SHAP: the benchmark's model-agnostic second opinion to Grad-CAM
(`bench_explain.py --image-shap N`). It lives here, not in core.explain, because only the
benchmark runs it: hundreds of forward passes per photo are too slow for the app."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import tensorflow as tf
from PIL import Image

import core.models.tf_setup  # noqa: F401  (before TensorFlow: logging, KERAS_HOME)
from core.common.images import letterbox, open_image
from core.explain.gradcam import grid_to_image
from core.models.backbones import IMAGE_SIZE


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the maximum (an all-zero map stays zero), like Grad-CAM's maps."""
    cam = np.nan_to_num(np.maximum(cam, 0.0), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(cam.max()) if cam.size else 0.0
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


class ImageShap:
    """SHAP with a blur masker over the 224×224 input. Much slower than Grad-CAM (hundreds
    of forward passes), so it runs under a time budget: the evaluation count is set from
    the measured cost of one batch."""

    def __init__(self, image_model: Any, *, masker: str = "blur(32,32)", batch_size: int = 32):
        import shap

        self._backbone, self._head = image_model.backbone, image_model.head
        self._masker = shap.maskers.Image(masker, (IMAGE_SIZE, IMAGE_SIZE, 3))
        self._batch_size = batch_size
        self._seconds_per_image: float | None = None
        self._class = 0
        spec = tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 3), tf.float32)
        self._probs = tf.function(lambda x: self._head(self._backbone(x, training=False), training=False),
                                  input_signature=[spec], reduce_retracing=True, autograph=False)
        self._explainer = shap.Explainer(self._f, self._masker)

    def _f(self, x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), self._batch_size):
            out.append(self._probs(tf.constant(np.asarray(x[i:i + self._batch_size], np.float32))).numpy())
        return np.concatenate(out)[:, self._class]

    def explain(self, image: Any, class_index: int, *, max_evals: int = 300,
                time_budget_s: float | None = 8.0) -> tuple[np.ndarray, dict]:
        """(H, W) map of positive SHAP values on the original photo, in [0, 1], and info
        (evaluations used, seconds, base value, additivity error on the input)."""
        started = time.perf_counter()
        img = image if isinstance(image, Image.Image) else open_image(image, what="image")
        pixels = letterbox(img)[None]
        self._class = int(class_index)
        if self._seconds_per_image is None:  # measure once (also warms the graph)
            t = time.perf_counter()
            self._f(np.repeat(pixels, self._batch_size, axis=0))
            self._seconds_per_image = (time.perf_counter() - t) / self._batch_size
        evals = max_evals
        if time_budget_s is not None:
            evals = int(min(max_evals, max(10, time_budget_s / max(self._seconds_per_image, 1e-4))))
        sv = self._explainer(pixels, max_evals=evals, batch_size=self._batch_size, silent=True)
        values = np.asarray(sv.values[0]).sum(axis=-1)  # (224, 224)
        full = float(self._f(pixels)[0])
        base = float(np.asarray(sv.base_values).reshape(-1)[0])
        info = {"evals": evals, "seconds": time.perf_counter() - started, "base_value": base,
                "output": full, "additivity_error": abs(base + float(values.sum()) - full)}
        # average-pool the input-resolution map onto a 28×28 grid, then map it like Grad-CAM
        grid = values.reshape(28, IMAGE_SIZE // 28, 28, IMAGE_SIZE // 28).mean(axis=(1, 3))
        return grid_to_image(_normalise(grid), *img.size), info
