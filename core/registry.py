"""Model versions: which bundles exist, which one is live, and who switched it.

Bundles live under <home>/models/<name>/ (the CLI and the demo write there too); the
`models` table knows each by its version id, with its metrics, and marks exactly one as
active. `sync_models` registers bundles that appeared on disk, so a model trained from
the command line shows up in the app without an import step.
"""

from __future__ import annotations

from pathlib import Path

from core.auth import User, require_current
from core.bundle import METADATA, is_bundle, read_metadata
from core.errors import InputError
from core.settings import get_settings
from core.store import Store, from_json, to_json, utc_now


def _row(path: Path, metadata: dict, created_by: str | None) -> dict:
    return {"version": metadata["version"], "path": str(path.resolve()), "name": path.name,
            "metrics": to_json(metadata.get("metrics")), "metadata": to_json(metadata), "active": 0,
            "created_by": created_by, "created_at": metadata.get("created_at") or utc_now()}


def _read_bundle(path: Path) -> dict:
    """The bundle's metadata; InputError when `path` holds no readable, versioned bundle."""
    if not is_bundle(path):
        raise InputError(f"{path} is not a model bundle")
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable {METADATA} ({exc})") from None
    if not isinstance(metadata, dict) or not metadata.get("version"):
        raise InputError(f"{path}: {METADATA} has no version")
    return metadata


def _version_on_disk(path: Path) -> str | None:
    """The version of the bundle now at `path`; None if there is none (deleted, broken)."""
    try:
        return str(_read_bundle(path)["version"])
    except InputError:
        return None


def register_model(store: Store, path: str | Path, *, created_by: str | None = None, activate: bool = False) -> str:
    """Record a saved bundle (idempotent); returns its version id."""
    path = Path(path)
    metadata = _read_bundle(path)
    with store.transaction() as db:
        db["models"].insert(_row(path, metadata, created_by), ignore=True)
        db.execute("UPDATE models SET path = ?, name = ? WHERE version = ?",
                   [str(path.resolve()), path.name, metadata["version"]])
        if activate:
            _activate(db, metadata["version"])
    return metadata["version"]


def sync_models(store: Store) -> list[str]:
    """Register bundles found under the models folder and make sure one is active (the
    newest) when any exists. Returns the newly registered versions."""
    known = {row["version"]: row["path"] for row in store.query("SELECT version, path FROM models")}
    found = []
    models_dir = get_settings().models_dir
    if models_dir.is_dir():
        for path in sorted(models_dir.iterdir()):
            version = _version_on_disk(path)  # a broken folder is skipped, not fatal
            if version is None:
                continue
            # new, or known but no longer where it was recorded (moved, or its folder was
            # retrained in place and holds another version now)
            if version not in known or _version_on_disk(Path(known[version])) != version:
                found.append(register_model(store, path, created_by="disk"))
                known[version] = str(path.resolve())
    with store.transaction() as db:
        # a bundle deleted (or replaced by another version) on disk cannot stay, live or not
        for row in db.execute("SELECT version, path FROM models").fetchall():
            if _version_on_disk(Path(row["path"])) != row["version"]:
                db.execute("DELETE FROM models WHERE version = ?", [row["version"]])
        if not db.execute("SELECT 1 FROM models WHERE active = 1").fetchone():
            newest = db.execute("SELECT version FROM models ORDER BY created_at DESC, version DESC").fetchone()
            if newest:
                _activate(db, newest["version"])
    return found


def _activate(db, version: str) -> None:
    db.execute("UPDATE models SET active = 0 WHERE active = 1 AND version != ?", [version])
    db.execute("UPDATE models SET active = 1, activated_at = ? WHERE version = ?", [utc_now(), version])


def activate(store: Store, user: User, version: str) -> None:
    """Make `version` the live model (admins only; audited)."""
    user = require_current(store, user, "models")
    row = store.one("SELECT path FROM models WHERE version = ?", [version])
    if row is None:
        raise InputError(f"no model version '{version}'")
    if _version_on_disk(Path(row["path"])) != version:
        raise InputError(f"the files of model {version} are gone from {row['path']}")
    previous = live_model(store)
    with store.transaction() as db:
        _activate(db, version)
        store.audit(user.username, "model.activate",
                    {"version": version, "previous": previous["version"] if previous else None}, db=db)


def _decode(row: dict) -> dict:
    return {**row, "metrics": from_json(row["metrics"]), "metadata": from_json(row["metadata"]),
            "active": bool(row["active"])}


def live_model(store: Store) -> dict | None:
    """The active version's row (metrics and metadata decoded), or None."""
    row = store.one("SELECT * FROM models WHERE active = 1")
    return _decode(row) if row else None


def list_models(store: Store) -> list[dict]:
    return [_decode(r) for r in store.query("SELECT * FROM models ORDER BY created_at DESC")]


def get_model(store: Store, version: str) -> dict | None:
    row = store.one("SELECT * FROM models WHERE version = ?", [version])
    return _decode(row) if row else None
