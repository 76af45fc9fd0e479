"""A model bundle on disk: one directory per trained model, written atomically.

    MODEL_DIR/
      metadata.json      version, created_at, data fingerprint, counts, metrics, backbone, versions
      labels.json        class names, index order of every probability vector
      text_model.keras   raw strings in (absent if the catalogue had no text)
      image_model.keras  pixels in, backbone nested (absent if it had no images)
      fusion.json        stacked logistic regression over both models

A half-written bundle must never be loadable, and a failed retrain must never
damage the bundle that was there: everything is written to a temporary sibling
directory that is renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

METADATA = "metadata.json"
LABELS = "labels.json"
TEXT_MODEL = "text_model.keras"
IMAGE_MODEL = "image_model.keras"
FUSION = "fusion.json"
FORMAT_VERSION = 1


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `target` in one rename
    (the old one is moved aside first and removed after), on failure it is deleted."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:  # put the previous bundle back
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def new_version_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "pandas", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def read_metadata(model_dir: str | Path) -> dict:
    path = Path(model_dir) / METADATA
    return json.loads(path.read_text())


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / METADATA).is_file() and (Path(path) / LABELS).is_file()


def require_bundle(path: str | Path) -> None:
    """Cheap (no TensorFlow): callers check it before reading any data, so a wrong
    model directory is the only message the user gets."""
    from core.errors import InputError

    if not is_bundle(path):
        raise InputError(f"{path}: not a model bundle (no {METADATA} / {LABELS}); "
                         "train one with `python -m core train … --out DIR`")
