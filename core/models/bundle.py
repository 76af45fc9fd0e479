"""A model bundle on disk: one directory per trained model, written atomically.

    MODEL_DIR/
      metadata.json      version, created_at, data fingerprint, counts, metrics, backbone, versions
      labels.json        class names, index order of every probability vector
      text_model.keras   raw strings in (absent if the catalogue had no text)
      image_model.keras  pixels in, backbone nested (absent if it had no images)
      fusion.json        stacked logistic regression over both models
      manifest.json      SHA-256 of every other file, written last

A half-written bundle must never be loadable, and a failed retrain must never
damage the bundle that was there: everything is written to a temporary sibling
directory that is renamed into place only when complete. The manifest, written last,
lets a load refuse a bundle that was copied half-way or changed afterwards (bundles
saved before manifests existed still load, as "unverified").
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
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
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# What atomic_directory leaves beside the target while it writes (or after a crash):
# `.<name>.tmp-<random>` (being written) and `.<name>.old-<random>` (the replaced bundle).
LEFTOVER_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[A-Za-z0-9_]+$")


class BundleError(ValueError):
    """A bundle that must not be loaded: half-written, or changed after it was saved."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_files(model_dir: Path) -> list[str]:
    """Every file of the bundle but the manifest, as sorted relative POSIX paths."""
    return sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")
                  if p.is_file() and p.relative_to(model_dir).as_posix() != MANIFEST)


def write_manifest(model_dir: str | Path) -> None:
    """Record the SHA-256 of every file (called last, once everything else is written)."""
    model_dir = Path(model_dir)
    files = {name: _sha256(model_dir / name) for name in _bundle_files(model_dir)}
    write_json(model_dir / MANIFEST, {"format": 1, "algorithm": "sha256", "files": files})


def verify_bundle(model_dir: str | Path) -> bool:
    """True when the manifest matches every file; False for a bundle saved before
    manifests (it loads, unverified). Raises BundleError when a listed file is missing or
    differs, or a file was added: the bundle is half-written or was changed."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not path.is_file():
        return False
    try:
        listed = json.loads(path.read_text()).get("files")
    except (OSError, ValueError, AttributeError) as exc:
        raise BundleError(f"{model_dir}: unreadable {MANIFEST} ({exc}); the bundle is damaged, "
                          "train or copy it again") from None
    if not isinstance(listed, dict):
        raise BundleError(f"{model_dir}: {MANIFEST} lists no files; the bundle is damaged, train or copy it again")
    present = set(_bundle_files(model_dir))
    problems = [f"{name} is missing" for name in sorted(set(listed) - present)]
    problems += [f"{name} is not part of the saved bundle" for name in sorted(present - set(listed))]
    problems += [f"{name} changed since it was saved" for name in sorted(set(listed) & present)
                 if _sha256(model_dir / name) != listed[name]]
    if problems:
        raise BundleError(f"{model_dir}: refused, the bundle is half-written or was tampered with "
                          f"({'; '.join(problems[:3])}{' …' if len(problems) > 3 else ''}); "
                          "train or copy it again")
    return True


def is_leftover(path: str | Path) -> bool:
    """A temporary or set-aside folder of atomic_directory (never a bundle to register)."""
    return bool(LEFTOVER_RE.match(Path(path).name))


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success its manifest is written (last) and it
    replaces `target` in one rename (the old one is moved aside first and removed after),
    on failure it is deleted."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        write_manifest(tmp)
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
    from core.common.errors import InputError

    if not is_bundle(path):
        raise InputError(f"{path}: not a model bundle (no {METADATA} / {LABELS}); "
                         "train one with `python -m core train … --out DIR`")
