"""A model bundle on disk: one directory per trained model, written atomically.

    MODEL_DIR/
      metadata.json      version, created_at, data fingerprint, counts, metrics, backbone, versions
                         (read and written as a `BundleMetadata`)
      labels.json        class names, index order of every probability vector
      text_model.keras   raw strings in (absent if the catalogue had no text)
      image_model.keras  pixels in, backbone nested (absent if it had no images)
      fusion.json        stacked logistic regression over both models
      tree.json          the category tree: paths, classes per level, decode weights (absent
                         in bundles saved before trees: those are flat)
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
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

METADATA = "metadata.json"
LABELS = "labels.json"
TREE = "tree.json"
TEXT_MODEL = "text_model.keras"
IMAGE_MODEL = "image_model.keras"
FUSION = "fusion.json"
MANIFEST = "manifest.json"
# The bundle's layout version: written into metadata.json and manifest.json, and a bundle
# of a newer one is refused on load (this code cannot know what changed in it).
FORMAT_VERSION = 2  # 2: tree.json, text models that answer over the tree's paths
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
    write_json(model_dir / MANIFEST, {"format": FORMAT_VERSION, "algorithm": "sha256", "files": files})


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


@dataclass
class BundleMetadata:
    """What metadata.json holds, typed so callers read attributes instead of digging
    into nested dicts. Bundles saved by older versions lack some keys: they read as the
    defaults here. Keys this code does not know are kept in `extra` and written back."""

    version: str = ""
    format: int = FORMAT_VERSION
    created_at: str | None = None
    data_fingerprint: str | None = None
    source: dict = field(default_factory=dict)      # the catalogue: path, text/label/image columns
    rows: dict = field(default_factory=dict)        # counts: used, train, validation, per_class…
    metrics: dict = field(default_factory=dict)     # split ("validation", "eval_slice") -> model -> metrics
    text_arch: str = "tfidf"                        # bundles before the key existed were all tfidf
    backbone: str | None = None
    fusion: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)      # the training options (TrainConfig as a dict)
    train_seconds: float | None = None
    packages: dict = field(default_factory=dict)
    history: dict | None = None                     # per-epoch curves of the final fits
    trained_from: dict | None = None                # set when trained from the studio's store
    tree: dict | None = None                        # category tree: depth, classes per level, decode
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> "BundleMetadata":
        if not isinstance(data, dict):
            raise ValueError(f"{METADATA} must hold a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        if "version" in values:
            values["version"] = str(values["version"])
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of metadata.json (unset optional keys left out, unknown ones kept)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not None}, **self.extra}

    def split_metrics(self, split: str = "validation", model: str = "fused") -> dict:
        """The metrics of `model` (fused, text, image) on `split`; empty when not measured."""
        return metrics_of(self.metrics, split, model)

    @property
    def per_class_train(self) -> dict[str, int]:
        """Training rows per class (what drift is measured against)."""
        return self.rows.get("per_class_train") or {}


def metrics_of(metrics: dict | None, split: str = "validation", model: str = "fused") -> dict:
    """`metrics[split][model]`, empty where a split or a model was not measured."""
    return ((metrics or {}).get(split) or {}).get(model) or {}


def check_format(metadata: BundleMetadata, model_dir: str | Path) -> None:
    """Refuse a bundle written in a newer layout than this code reads."""
    if int(metadata.format) > FORMAT_VERSION:
        raise BundleError(f"{model_dir}: bundle format {metadata.format} is newer than this version of "
                          f"Catalog Studio reads ({FORMAT_VERSION}); upgrade it, or train the model again")


def read_metadata(model_dir: str | Path) -> BundleMetadata:
    """The bundle's metadata.json. OSError when unreadable, ValueError when not JSON or not an object."""
    path = Path(model_dir) / METADATA
    return BundleMetadata.from_dict(json.loads(path.read_text()))


def write_metadata(model_dir: str | Path, metadata: BundleMetadata) -> None:
    write_json(Path(model_dir) / METADATA, metadata.to_dict())


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / METADATA).is_file() and (Path(path) / LABELS).is_file()


def require_bundle(path: str | Path) -> None:
    """Cheap (no TensorFlow): callers check it before reading any data, so a wrong
    model directory is the only message the user gets."""
    from core.common.errors import InputError

    if not is_bundle(path):
        raise InputError(f"{path}: not a model bundle (no {METADATA} / {LABELS}); "
                         "train one with `python -m core train … --out DIR`")


def read_labels(path: str | Path) -> list[str]:
    """A bundle's class names (probability order) without loading its models."""
    require_bundle(path)
    return json.loads((Path(path) / LABELS).read_text(encoding="utf-8"))
