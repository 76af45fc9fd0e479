"""Read a legacy (pre-1.6, non-zip) PyTorch state dict with pickle and numpy only.

Why: pretrained weights often ship only as `.pth` pickles, and we do not want torch
(~1 GB) as a dependency just to read them once. The legacy layout is:

    pickle(magic) pickle(protocol_version) pickle(sys_info) pickle(state_dict)
    pickle(storage_keys) then, per key in that order: int64 element count + raw bytes

Tensors inside the state dict point at storages by persistent id; their bytes come
only later in the file, so tensors are rebuilt after all storages are read.
Every pickle in the file (header, state dict, storage keys) goes through one
restricted unpickler: only the handful of torch / collections globals a state dict
needs resolve, anything else raises, so a hostile pickle cannot run code. A caller that
knows which file it expects passes its SHA-256, checked before anything is unpickled.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.common.errors import InputError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _StorageType:
    name: str


@dataclass
class _Storage:
    """A storage (or a view into one) whose bytes are read after the pickle."""

    key: str
    dtype: np.dtype
    numel: int
    view: tuple[str, int, int] | None = None  # (view_key, offset, size), old files only


@dataclass
class _PendingTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _PendingTensor:
    """Stand-in for torch._utils._rebuild_tensor(_v2): remember where the data lives."""
    return _PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


# The only globals a legacy state dict refers to; everything else is refused.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): lambda: _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda: _rebuild_parameter,
    **{("torch", name): (lambda name=name: _StorageType(name)) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"unsupported global {module}.{name}")
        return allowed()

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, *rest = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        view = tuple(rest[0]) if rest and rest[0] is not None else None
        storage = self.storages.setdefault(
            str(key), _Storage(str(key), np.dtype(STORAGE_DTYPES[storage_type.name]), int(numel))
        )
        return _Storage(storage.key, storage.dtype, storage.numel, view) if view else storage


def _materialize(t: _PendingTensor, data: dict[str, np.ndarray]) -> np.ndarray:
    """Apply storage offset/size/stride (in elements) and return an owned array."""
    flat = data[t.storage.key]
    if t.storage.view is not None:
        _view_key, view_offset, view_size = t.storage.view
        flat = flat[view_offset : view_offset + view_size]
    if t.size:
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if min(t.size) > 0 and last >= flat.size:
            raise InputError(f"tensor of shape {t.size} runs past the end of storage {t.storage.key}")
    elif t.offset >= flat.size:
        raise InputError(f"scalar offset {t.offset} outside storage {t.storage.key}")
    base = flat[t.offset :]
    strides = tuple(s * flat.itemsize for s in t.stride)
    return np.lib.stride_tricks.as_strided(base, shape=t.size, strides=strides).copy()


def read_legacy_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Return {name: numpy array} from a legacy PyTorch `.pth` file, without torch.

    Raises InputError when the file's SHA-256 is not `sha256` (when given), or when it
    is not a legacy torch pickle (including the zip format written by torch >= 1.6,
    which this reader does not handle).
    """
    path = Path(path)
    raw = path.read_bytes()
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256.lower():
        raise InputError(f"{path}: not the expected weights file (SHA-256 {hashlib.sha256(raw).hexdigest()[:16]}…, "
                         f"expected {sha256[:16]}…); reinstall the package that ships it")
    if raw[:4] == b"PK\x03\x04":
        raise InputError(f"{path}: zip-format torch checkpoint; only the legacy pickle format is supported")
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    try:
        def load():  # every pickle of the file, not only the state dict, is restricted
            return _Unpickler(f, storages).load()

        magic = load()
        if magic != MAGIC_NUMBER:
            raise InputError(f"{path}: not a legacy torch pickle (bad magic number)")
        protocol = load()
        if protocol != PROTOCOL_VERSION:
            raise InputError(f"{path}: unsupported torch protocol version {protocol!r}")
        sys_info = load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise InputError(f"{path}: big-endian torch files are not supported")
        state = load()
        keys = load()
    except InputError:
        raise
    except Exception as exc:  # any unpickling failure means "not what we expect"
        raise InputError(f"{path}: not a legacy torch pickle ({type(exc).__name__}: {exc})") from exc

    data: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise InputError(f"{path}: storage {key!r} listed but never used")
        header = f.read(8)
        if len(header) != 8:
            raise InputError(f"{path}: truncated before storage {key!r}")
        (numel,) = struct.unpack("<q", header)
        nbytes = numel * storage.dtype.itemsize
        buf = f.read(nbytes)
        if numel != storage.numel or len(buf) != nbytes:
            raise InputError(f"{path}: storage {key!r} is truncated or has the wrong size")
        data[storage.key] = np.frombuffer(buf, dtype=storage.dtype.newbyteorder("<"))

    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, got {type(state).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(value, _PendingTensor):
            raise InputError(f"{path}: entry {name!r} is not a tensor")
        if value.storage.key not in data:
            raise InputError(f"{path}: storage for {name!r} missing from the file")
        out[name] = _materialize(value, data)
    return out
