"""Grad-CAM (and Grad-CAM++, and a pixel-refined map) for the image model, on a trained or a *loaded* bundle.

Why not the textbook recipe: after `Classifier.load` the backbone is a nested layer of
the saved model, and Keras 3 refuses `keras.Model(outer.inputs, backbone.get_layer(…)
.output)` ("Output … is not connected to inputs"). So we build our own gradient path:

1. `features`: one forward pass through a model made from the backbone's *own* input
   to [its last convolutional block, its pooled output], then the head → the image
   model's probabilities (the same numbers `ImageModel.predict_proba_pixels` gives);
2. `heatmap`: the layers after the last conv block inside the backbone (global average
   pooling for every backbone we ship) and the head are replayed on the cached feature
   map inside a `GradientTape`, so a heatmap for *another* class costs only that tiny
   tail (the app lets the user pick any class). If the tail is not a simple chain we fall
   back to differentiating through the whole backbone in one tape.

The explained score is the image model's own log-probability for the class (not the
fused one): it is what the image branch contributes to the fusion (a linear function
of the image model's log-probabilities), and unlike the probability it does not
saturate for confident predictions. `score="prob"` is available for comparison.

Methods (`method=`):

- ``gradcam``: the classic map on the last conv block's 7×7 grid (Selvaraju et al.);
- ``gradcam++``: Chattopadhay et al.'s weighting of the same grid;
- ``guided-gradcam``: the Grad-CAM map (upsampled to the 224×224 input) times
  a pixel-level map, in the spirit of the Grad-CAM paper's Guided Grad-CAM but with a
  pixel map that estimates what greying a pixel does: integrated gradients from a
  mid-grey image (4 midpoint steps, the positive part, 3×3 box-smoothed). Grad-CAM says
  *where* the class evidence is, the pixel term says *which pixels there* carry it. Cost:
  one batch of 5 forward + backward passes through the backbone (4 path points + the
  photo itself, whose conv gradients give the Grad-CAM factor).
- ``guided-density`` (default): the same map drawn so a person can read it
  (`density_map`): √(evidence density around the pixel × the pixel's rank), where the
  density is the guided map Gaussian-blurred (σ = 10% of the photo's long side) and the
  rank is the pixel's among those with positive evidence (a floor of 10% lets the
  region show through). A few milliseconds on top of ``guided-gradcam``.

Why the default is not plain Grad-CAM: on the Flipkart benchmark (bench/bench_explain.py)
greying the 20% hottest pixels of the plain 7×7 maps lowered the image model's
probability *less* than greying a random 20% of pixels on 35–45% of the photos (scattered
grey pixels disturb a CNN a lot, and one contiguous blob rarely removes all of a
product's evidence), which fails the ≥ 70% criterion. The pixel-refined map wins on
~90%, but on screen it is speckle: its median heat over a photo is ~0.006 and ~1% of the
pixels pass 0.2, so the overlay looks blank. Blurring it (σ 1–8% of the photo) makes
blobs, and blobs fail the deletion test again (52–60% on the training split). Keeping
the pixel ranking inside the blurred density keeps most of the faithfulness (an occlusion
map, 49 extra forward passes, only reached 70% and took seconds). Variants were compared
on products of the bundle's *training* split (guided-density: 81% wins, median heat
0.28), then measured on the held-out ones (the benchmark's, 100 photos): guided-density
wins on 86% (guided-gradcam 90%, plain Grad-CAM 66%) with a median heat of 0.26 and 65%
of a photo above 0.2 (guided-gradcam: 0.002 and 1%). Plain Grad-CAM remains available (it says where, less precisely what).

Every map is normalised to [0, 1] by its maximum (an all-zero map means no region
supports the class), mapped back onto the *original* photo with the inverse
letterbox geometry (`core.common.images.letterbox_box`), bilinearly between cell/pixel centres,
and normalised again (sampling can miss the exact peak), so its maximum is 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import core.models.tf_setup  # noqa: F401  (before TensorFlow: logging, KERAS_HOME)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from core.common.images import letterbox, letterbox_box, open_image
from core.models.backbones import IMAGE_SIZE, backbone_spec

METHODS = ("guided-density", "guided-gradcam", "gradcam", "gradcam++")
DEFAULT_METHOD = "guided-density"  # readable on screen and passes the deletion benchmark (module docstring)
PIXEL_METHODS = ("guided-density", "guided-gradcam")  # computed from the pixel-refined map
DENSITY_SIGMA = 0.1  # Gaussian σ of the evidence density, as a share of the photo's long side
DENSITY_FLOOR = 0.1  # share of a region's density every pixel of it shows
READABLE_LEVEL = 0.2  # "visible" heat on the jet overlay (dark blue below)
REFERENCE = 128.0  # the "removed" pixel value: mid grey (what the deletion benchmark greys out with)
IG_STEPS = 4  # integrated-gradient path points for the pixel map (midpoint rule)
SCORES = ("log_prob", "prob")
_EPS = 1e-12


# --------------------------------------------------------------------------- geometry


def _interp_matrix(n_out: int, n_in: int, scale: float, offset: float) -> np.ndarray:
    """(n_out, n_in) bilinear weights: output index i reads input coordinate i*scale+offset
    (clamped at the edges). Rows are convex, so values stay in the input's range."""
    u = np.clip(np.arange(n_out, dtype=np.float64) * scale + offset, 0.0, n_in - 1.0)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = u - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), (1.0 - frac).astype(np.float32))
    np.add.at(m, (rows, i1), frac.astype(np.float32))
    return m


def grid_to_image(grid: np.ndarray, width: int, height: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Map a heatmap on the model's grid (cells tile the size×size letterboxed input) onto
    the original width×height photo. Works as two small matrix products (separable
    bilinear), so it has no image-size limit and costs O(H·W)."""
    gh, gw = grid.shape
    left, top, w, h = letterbox_box(width, height, size)
    cell_x, cell_y = size / gw, size / gh
    # grid coordinate of the centre of original pixel x: (left + (x + .5)·w/width) / cell - .5
    mx = _interp_matrix(width, gw, (w / width) / cell_x, (left + 0.5 * w / width) / cell_x - 0.5)
    my = _interp_matrix(height, gh, (h / height) / cell_y, (top + 0.5 * h / height) / cell_y - 0.5)
    out = my @ grid.astype(np.float32) @ mx.T
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def grid_to_input(grid: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """The heatmap on the size×size model input (letterbox padding included)."""
    return grid_to_image(grid, size, size, size)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The photo with the heatmap blended on top (jet colours): what gradcam.png shows."""
    import cv2

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap {heatmap.shape} does not match the image {rgb.shape[:2]}")
    colours = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    out = (1 - alpha) * rgb + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the maximum; an all-zero (or non-finite) map stays zero."""
    cam = np.nan_to_num(np.maximum(cam, 0.0), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(cam.max()) if cam.size else 0.0
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, dtype=np.float32)


def cam_from_gradients(activations: np.ndarray, grads: np.ndarray, method: str = "gradcam") -> np.ndarray:
    """(h, w, K) activations and gradients → (h, w) map in [0, 1].

    gradcam: channel weights = spatial mean of the gradient (Selvaraju et al.).
    gradcam++: weights = Σ α·relu(grad) with the closed-form α of Chattopadhay et al.
    (exponential score), which credits every location of a channel that helps.
    """
    a = activations.astype(np.float64)
    g = grads.astype(np.float64)
    if method == "gradcam":
        weights = g.mean(axis=(0, 1))
    elif method == "gradcam++":
        g2, g3 = g * g, g * g * g
        denom = 2.0 * g2 + a.sum(axis=(0, 1), keepdims=True) * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=np.abs(denom) > 0)
        weights = (alpha * np.maximum(g, 0.0)).sum(axis=(0, 1))
    else:
        raise ValueError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return _normalise((a * weights).sum(axis=-1))


def pixel_map(pixels: np.ndarray, mean_grads: np.ndarray) -> np.ndarray:
    """Integrated gradients from the grey reference, summed over colour channels and
    box-smoothed over 3×3 pixels (single-pixel gradients are noisy; a 3×3 patch is still
    far finer than the 32-pixel Grad-CAM cells)."""
    from scipy.ndimage import uniform_filter

    ig = ((pixels - REFERENCE) * mean_grads).sum(axis=-1)
    return uniform_filter(ig.astype(np.float32), size=3, mode="nearest")


def density_map(guided: np.ndarray, sigma: float = DENSITY_SIGMA, floor: float = DENSITY_FLOOR) -> np.ndarray:
    """The pixel-refined map made readable, keeping what makes it faithful.

    Blurring alone fails the deletion benchmark (a blob greyed out hurts the model less
    than scattered grey pixels), and the raw map is speckle whose median is ~0.006. So the
    map is the geometric mean of two faithful quantities: the evidence *density* around a
    pixel (the map Gaussian-blurred, σ a share of the photo's long side, which spans the
    whole letterboxed input) and the pixel's own *rank* among the pixels with positive
    evidence (0 where it has none; `floor` of the density shows through everywhere, so a
    region reads as one warm area with its hottest pixels inside it)."""
    from scipy.ndimage import gaussian_filter
    from scipy.stats import rankdata

    g = np.nan_to_num(np.maximum(guided.astype(np.float32), 0.0))
    density = _normalise(gaussian_filter(g, sigma * max(g.shape), mode="constant"))
    rank = np.zeros_like(g)
    positive = g > 0
    if positive.any():
        rank[positive] = rankdata(g[positive], method="average") / positive.sum()
    return _normalise(np.sqrt(density * (floor + (1.0 - floor) * rank)))


def readability(heatmap: np.ndarray) -> dict[str, float]:
    """How much of a heatmap a person can see on the overlay: the median heat over the
    photo and the share of its pixels above READABLE_LEVEL (jet is dark blue below it).
    The old default's speckle scored a median of ~0.006 here."""
    h = np.asarray(heatmap, dtype=np.float32)
    return {"median_heat": float(np.median(h)), "share_above_0.2": float((h > READABLE_LEVEL).mean())}


# --------------------------------------------------------------------------- results


@dataclass
class Features:
    """One forward pass: what every class's heatmap is computed from."""

    conv: Any  # tf.Tensor (1, h, w, K): the last conv block's activations; None until a method needs them
    probs: np.ndarray  # (classes,) the image model's probabilities
    pixels: np.ndarray  # (1, 224, 224, 3) letterboxed raw RGB (for the full-tape fallback)
    size: tuple[int, int]  # (width, height) of the original photo


@dataclass
class GradCamResult:
    class_index: int
    probability: float  # the image model's probability for the class
    probs: np.ndarray  # the image model's probabilities, all classes
    grid: np.ndarray  # (h, w) in [0, 1]: the Grad-CAM (or ++) map on the model's conv grid
    heatmap: np.ndarray  # (H, W) of the original photo, in [0, 1]: the method's map
    method: str
    score: str
    seconds: float = 0.0

    def peak(self) -> tuple[int, int]:
        """(x, y) of the hottest pixel of the original photo."""
        y, x = np.unravel_index(int(np.argmax(self.heatmap)), self.heatmap.shape)
        return int(x), int(y)


# --------------------------------------------------------------------------- Grad-CAM


def _chain_after(backbone: keras.Model, layer_name: str) -> list[keras.layers.Layer] | None:
    """The layers after `layer_name` if they form a simple chain ending in the backbone's
    output (true for every backbone in core.models.backbones: just global average pooling)."""
    layers = list(backbone.layers)
    names = [l.name for l in layers]
    start = names.index(layer_name)
    tail, prev = layers[start + 1:], layers[start]
    try:
        for layer in tail:
            if layer.input is not prev.output:
                return None
            prev = layer
        return tail if prev.output is backbone.output else None
    except (AttributeError, ValueError):  # several inbound nodes, or no symbolic graph
        return None


class GradCam:
    """Gradient models for one image model, built once and reused (the app calls this on
    every prediction). Not thread-safe on its own: callers serialise inference (the
    Classifier's lock), like every Keras call here."""

    def __init__(self, backbone: keras.Model, head: keras.Model, last_conv: str, *,
                 method: str = DEFAULT_METHOD, score: str = "log_prob", force_full_tape: bool = False,
                 ig_steps: int = IG_STEPS):
        if method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        self.method, self.score, self.ig_steps = method, score, int(ig_steps)
        self.head = head
        conv_layer = backbone.get_layer(last_conv)
        # From the backbone's *own* input: connected even when it is nested in a loaded model.
        self._conv_model = keras.Model(backbone.inputs, [conv_layer.output, backbone.output],
                                       name="gradcam_features")
        self._tail = None if force_full_tape else _chain_after(backbone, last_conv)
        self._tail_checked = False
        spec = tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 3), tf.float32)
        conv_shape = tuple(self._conv_model.output_shape[0][1:])
        self.grid_shape = conv_shape[:2]

        @tf.function(input_signature=[spec], reduce_retracing=True)
        def forward(x):
            conv, pooled = self._conv_model(x, training=False)
            return conv, pooled, self.head(pooled, training=False)

        @tf.function(input_signature=[tf.TensorSpec((None,) + conv_shape, tf.float32),
                                      tf.TensorSpec((), tf.int32)], reduce_retracing=True)
        def tail_grads(conv, c):
            with tf.GradientTape() as tape:
                tape.watch(conv)
                x = conv
                for layer in self._tail:
                    x = layer(x, training=False)
                probs = self.head(x, training=False)
                target = self._target(probs, c)
            return tape.gradient(target, conv), x

        @tf.function(input_signature=[spec, tf.TensorSpec((), tf.int32)], reduce_retracing=True)
        def full_grads(x, c):
            with tf.GradientTape() as tape:
                tape.watch(x)  # records the whole forward pass, so we can differentiate w.r.t. conv
                conv, pooled = self._conv_model(x, training=False)
                probs = self.head(pooled, training=False)
                target = self._target(probs, c)
            return tape.gradient(target, conv), conv

        @tf.function(input_signature=[spec, tf.TensorSpec((), tf.int32)], reduce_retracing=True)
        def path_grads(xs, c):
            """xs: the integrated-gradient path points, then the photo itself (last row)."""
            with tf.GradientTape() as tape:
                tape.watch(xs)
                conv, pooled = self._conv_model(xs, training=False)
                probs = self.head(pooled, training=False)
                target = tf.reduce_sum(self._target(probs, c))  # rows are independent
            grad_conv, grad_x = tape.gradient(target, [conv, xs])
            return grad_conv[-1:], conv[-1:], grad_x[:-1]

        self._forward, self._tail_grads, self._full_grads = forward, tail_grads, full_grads
        self._path_grads = path_grads

    def _target(self, probs, c):
        p = probs[:, c]
        return tf.math.log(p + _EPS) if self.score == "log_prob" else p

    @classmethod
    def for_image_model(cls, image_model: Any, **kwargs: Any) -> "GradCam":
        """From a core.models.image_model.ImageModel (trained or loaded)."""
        if image_model.head is None:
            raise ValueError("the image model has no trained head")
        last_conv = backbone_spec(image_model.spec.name).last_conv
        return cls(image_model.backbone, image_model.head, last_conv, **kwargs)

    @property
    def uses_tail(self) -> bool:
        return self._tail is not None

    def features(self, image: Any, probs: np.ndarray | None = None) -> Features:
        """Decode (path, bytes or PIL image) + letterbox + one forward pass. `probs`: the
        image model's probabilities for this photo when the caller has them already (a
        product just scored): then no forward pass is run here; the pixel methods need
        none, and the plain ones run the conv part when they first need it."""
        img = image if isinstance(image, Image.Image) else open_image(image, what="image")
        pixels = letterbox(img)[None]
        if probs is not None:
            return Features(None, np.asarray(probs, dtype=np.float32), pixels, img.size)
        conv, probs = self._conv_forward(pixels)
        return Features(conv, probs, pixels, img.size)

    def _conv_forward(self, pixels: np.ndarray) -> tuple[Any, np.ndarray]:
        """(conv activations, probabilities) of one forward pass; the first one also checks
        that replaying the tail gives the backbone's own output (if not: the full tape)."""
        conv, pooled, probs = self._forward(tf.constant(pixels))
        if self._tail is not None and not self._tail_checked:
            _, replay = self._tail_grads(conv, tf.constant(0, tf.int32))
            if not np.allclose(replay.numpy(), pooled.numpy(), rtol=1e-4, atol=1e-5):
                self._tail = None
            self._tail_checked = True
        return conv, np.asarray(probs[0], dtype=np.float32)

    def heatmap(self, feats: Features, class_index: int, method: str | None = None) -> GradCamResult:
        """The heatmap for one class from cached features (cheap: replays the tail only)."""
        started = time.perf_counter()
        method = method or self.method
        num_classes = len(feats.probs)
        if not 0 <= class_index < num_classes:
            raise ValueError(f"class index {class_index} out of range (0..{num_classes - 1})")
        if method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
        c = tf.constant(int(class_index), tf.int32)
        width, height = feats.size
        if method in PIXEL_METHODS:
            x = feats.pixels[0]
            alphas = (np.arange(self.ig_steps, dtype=np.float32) + 0.5) / self.ig_steps
            path = REFERENCE + alphas[:, None, None, None] * (x[None] - REFERENCE)
            grads, conv, grad_x = self._path_grads(tf.constant(np.concatenate([path, x[None]])), c)
            grid = cam_from_gradients(conv.numpy()[0], grads.numpy()[0], "gradcam")
            pixel = _normalise(pixel_map(x, grad_x.numpy().mean(axis=0)))
            input_map = _normalise(pixel * grid_to_input(grid))
            if method == "guided-density":
                input_map = density_map(input_map)
            heatmap = _normalise(grid_to_image(input_map, width, height))
        else:
            if feats.conv is None and self._tail is not None:
                feats.conv = self._conv_forward(feats.pixels)[0]
            if self._tail is not None:
                grads, _ = self._tail_grads(feats.conv, c)
                conv = feats.conv
            else:
                grads, conv = self._full_grads(tf.constant(feats.pixels), c)
            grid = cam_from_gradients(conv.numpy()[0], grads.numpy()[0], method)
            heatmap = _normalise(grid_to_image(grid, width, height))
        return GradCamResult(
            class_index=int(class_index), probability=float(feats.probs[class_index]), probs=feats.probs,
            grid=grid, heatmap=heatmap, method=method, score=self.score,
            seconds=time.perf_counter() - started,
        )

    def explain(self, image: Any, class_index: int | None = None, method: str | None = None) -> GradCamResult:
        """Heatmap for `class_index` (default: the image model's own top class)."""
        started = time.perf_counter()
        feats = self.features(image)
        result = self.heatmap(feats, int(np.argmax(feats.probs)) if class_index is None else class_index, method)
        result.seconds = time.perf_counter() - started
        return result
