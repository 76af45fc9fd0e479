"""Model versions: which bundles exist, which one is live, and who switched it.

Bundles live under <home>/models/<name>/ (the CLI and the demo write there too); the
`models` table knows each by its version id, with its metrics, and marks exactly one as
active. `sync_models` registers bundles that appeared on disk, so a model trained from
the command line shows up in the app without an import step.

The registry never changes the live model by itself: a bundle deleted or replaced on disk
is marked missing (its row and its history stay; the Models page shows the flag), and
once any version has been live only an admin activates another. Crash leftovers of an
atomic save (`.<name>.tmp-…`, `.<name>.old-…`) are never registered, and are cleaned.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from core.common.errors import InputError
from core.common.settings import get_settings
from core.models.bundle import (LEFTOVER_RE, METADATA, BundleError, BundleMetadata, is_bundle, is_leftover,
                                metrics_of, read_metadata, verify_bundle)
from core.studio.auth import User, require_current
from core.studio.store import Store, from_json, to_json, utc_now


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version (a row of `models`, its JSON decoded): what the pages,
    the sidebar and the CLI show about a version without opening its bundle."""

    version: str
    path: str
    name: str | None
    live: bool
    created_at: str | None
    created_by: str | None
    activated_at: str | None        # when it last went live (None: never was)
    missing_at: str | None          # when its bundle was found gone from `path` (None: present)
    metrics: dict                   # split -> model -> metrics, as registered
    metadata: BundleMetadata

    @property
    def missing(self) -> bool:
        return self.missing_at is not None

    def split_metrics(self, split: str = "validation", model: str = "fused") -> dict:
        """The metrics of `model` (fused, text, image) on `split`; empty when not measured."""
        return metrics_of(self.metrics, split, model)

    @classmethod
    def from_row(cls, row: dict) -> "ModelVersion":
        return cls(version=row["version"], path=row["path"], name=row.get("name"), live=bool(row["active"]),
                   created_at=row.get("created_at"), created_by=row.get("created_by"),
                   activated_at=row.get("activated_at"), missing_at=row.get("missing_at") or None,
                   metrics=from_json(row.get("metrics")) or {},
                   metadata=BundleMetadata.from_dict(from_json(row.get("metadata")) or {}))


def _row(path: Path, metadata: BundleMetadata, created_by: str | None) -> dict:
    return {"version": metadata.version, "path": str(path.resolve()), "name": path.name,
            "metrics": to_json(metadata.metrics), "metadata": to_json(metadata.to_dict()), "active": 0,
            "created_by": created_by, "created_at": metadata.created_at or utc_now()}


def _read_bundle(path: Path) -> BundleMetadata:
    """The bundle's metadata; InputError when `path` holds no readable, versioned bundle."""
    if not is_bundle(path):
        raise InputError(f"{path} is not a model bundle")
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable {METADATA} ({exc})") from None
    if not metadata.version:
        raise InputError(f"{path}: {METADATA} has no version")
    return metadata


def _version_on_disk(path: Path) -> str | None:
    """The version of the bundle now at `path`; None if there is none (deleted, broken)."""
    try:
        return _read_bundle(path).version
    except InputError:
        return None


def register_model(store: Store, path: str | Path, *, created_by: str | None = None, activate: bool = False,
                   activate_if_first: bool = False) -> str:
    """Record a saved bundle (idempotent); returns its version id. `activate_if_first`
    makes it live only when no version has ever been live (decided in the same
    transaction, so two first trainings cannot both win)."""
    path = Path(path)
    if is_leftover(path):
        raise InputError(f"{path} is a leftover of an interrupted save, not a model bundle")
    metadata = _read_bundle(path)
    with store.transaction() as db:
        db["models"].insert(_row(path, metadata, created_by), ignore=True)
        db.execute("UPDATE models SET path = ?, name = ?, missing_at = NULL WHERE version = ?",
                   [str(path.resolve()), path.name, metadata.version])
        if activate or (activate_if_first and not _ever_live(db)):
            _activate(db, metadata.version)
    return metadata.version


# A leftover younger than this may belong to a save in progress (a training job's worker).
LEFTOVER_GRACE_SECONDS = 10 * 60


def _newest_mtime(path: Path) -> float:
    try:
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.rglob("*")])
    except OSError:
        return time.time()


def clean_leftovers(models_dir: Path, *, grace_seconds: float = LEFTOVER_GRACE_SECONDS) -> list[str]:
    """Remove what an interrupted atomic save left in the models folder; returns the
    names removed. A set-aside `.old` bundle whose target is gone (the crash fell between
    the two renames) is put back instead: deleting it would lose the registered model."""
    removed = []
    if not models_dir.is_dir():
        return removed
    cutoff = time.time() - grace_seconds
    for path in sorted(models_dir.iterdir()):
        match = LEFTOVER_RE.match(path.name)
        if not match or not path.is_dir() or _newest_mtime(path) > cutoff:
            continue
        target = models_dir / match["name"]
        if match["kind"] == "old" and not target.exists():
            path.rename(target)
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def sync_models(store: Store) -> list[str]:
    """Register bundles found under the models folder, mark recorded ones whose files are
    gone or replaced as missing (never delete them), and activate the newest only while no
    version has ever been live. Returns the newly registered versions."""
    known = {row["version"]: row["path"] for row in store.query("SELECT version, path FROM models")}
    found = []
    models_dir = get_settings().models_dir
    clean_leftovers(models_dir)
    if models_dir.is_dir():
        for path in sorted(models_dir.iterdir()):
            if is_leftover(path):
                continue  # a save in progress (or not yet cleaned): never a version
            version = _version_on_disk(path)  # a broken folder is skipped, not fatal
            if version is None:
                continue
            # new, or known but no longer where it was recorded (moved, or its folder was
            # retrained in place and holds another version now)
            if version not in known or _version_on_disk(Path(known[version])) != version:
                found.append(register_model(store, path, created_by="disk"))
                known[version] = str(path.resolve())
    with store.transaction() as db:
        for row in db.execute("SELECT version, path, missing_at FROM models").fetchall():
            gone = _version_on_disk(Path(row["path"])) != row["version"]
            if gone and not row["missing_at"]:
                db.execute("UPDATE models SET missing_at = ? WHERE version = ?", [utc_now(), row["version"]])
            elif not gone and row["missing_at"]:
                db.execute("UPDATE models SET missing_at = NULL WHERE version = ?", [row["version"]])
        if not _ever_live(db):
            newest = db.execute("SELECT version FROM models WHERE missing_at IS NULL "
                                "ORDER BY created_at DESC, version DESC").fetchone()
            if newest:
                _activate(db, newest["version"])
    return found


def _ever_live(db) -> bool:
    """Has any version been live? Then only an admin changes the live model."""
    return db.execute("SELECT 1 FROM models WHERE active = 1 OR activated_at IS NOT NULL LIMIT 1").fetchone() \
        is not None


def _activate(db, version: str) -> None:
    db.execute("UPDATE models SET active = 0 WHERE active = 1 AND version != ?", [version])
    db.execute("UPDATE models SET active = 1, activated_at = ? WHERE version = ?", [utc_now(), version])


_ANY = object()  # activate(): no expectation about the live model


def activate(store: Store, user: User, version: str, *, expected_live=_ANY,
             promotion: dict | None = None) -> None:
    """Make `version` live (admins only; audited). `expected_live`: the version that must
    still be live, checked inside the switching transaction (a promotion judged against
    another live model is refused). `promotion`: detail of a `model.promote` audit row,
    written in the same transaction."""
    user = require_current(store, user, "models")
    row = store.one("SELECT path FROM models WHERE version = ?", [version])
    if row is None:
        raise InputError(f"no model version '{version}'")
    if _version_on_disk(Path(row["path"])) != version:
        raise InputError(f"the files of model {version} are gone from {row['path']}")
    try:
        verify_bundle(row["path"])
    except BundleError as exc:
        raise InputError(str(exc)) from None
    with store.transaction() as db:
        current = db.execute("SELECT version FROM models WHERE active = 1").fetchone()
        previous = current["version"] if current else None
        if expected_live is not _ANY and previous != expected_live:
            raise InputError("the live model changed since this comparison; compare again "
                             f"(it was {expected_live}, it is {previous or 'none'} now)")
        _activate(db, version)
        store.audit(user.username, "model.activate", {"version": version, "previous": previous}, db=db)
        if promotion is not None:
            store.audit(user.username, "model.promote", {"version": version, "previous": previous, **promotion},
                        db=db)


def add_model(store: Store, user: User, path: str | Path, *, make_live: bool = False) -> str:
    """Register a bundle trained elsewhere (`python -m core train --out`); admins. Audited;
    `make_live` is a promotion by `user` (no comparison: the shell's owner decides)."""
    user = require_current(store, user, "models")
    version = register_model(store, path, created_by=user.username)
    store.audit(user.username, "model.add", {"version": version, "path": str(Path(path).resolve())})
    if make_live:
        activate(store, user, version, promotion={"delta_macro_f1": None, "confirmed_worse": False,
                                                  "via": "models add"})
    return version


@dataclass(frozen=True)
class ModelRef:
    """Where a version's bundle is, without its metrics (the row's JSON is ~0.7 MB for a
    200-class tree: decoding it per API request cost 16 ms)."""
    version: str
    path: str
    missing: bool


def model_ref(store: Store, version: str | None = None) -> ModelRef | None:
    """The live version (None) or the named one, or None."""
    where, params = ("active = 1", []) if version is None else ("version = ?", [version])
    row = store.one(f"SELECT version, path, missing_at FROM models WHERE {where}", params)
    return ModelRef(row["version"], row["path"], bool(row["missing_at"])) if row else None


def live_model(store: Store) -> ModelVersion | None:
    """The live version, or None."""
    row = store.one("SELECT * FROM models WHERE active = 1")
    return ModelVersion.from_row(row) if row else None


def list_models(store: Store) -> list[ModelVersion]:
    """Every registered version, newest first (missing ones included)."""
    return [ModelVersion.from_row(r) for r in store.query("SELECT * FROM models ORDER BY created_at DESC")]


def get_model(store: Store, version: str) -> ModelVersion | None:
    row = store.one("SELECT * FROM models WHERE version = ?", [version])
    return ModelVersion.from_row(row) if row else None
