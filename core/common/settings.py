"""Where runtime state lives. One home for everything (bundles, caches, database,
uploads) so that STUDIO_HOME moves it all at once."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]


# Every variable the studio reads, in one place (the README's "Settings" table lists them).
ENVIRONMENT = {
    "STUDIO_HOME": "where models/ and data/ (database, uploads, caches) live; default: the checkout",
    "STUDIO_PORT": "the app's port for `python -m core serve` (8501)",
    "STUDIO_ADDRESS": "the address `serve` listens on (127.0.0.1; 0.0.0.0 only on a trusted network)",
    "STUDIO_ADMIN_USER": "the first admin's name when the database has no users (admin)",
    "STUDIO_ADMIN_PASSWORD": "the first admin's password (else a one-time password is printed)",
    "STUDIO_SESSION_IDLE_MINUTES": "log out after this many idle minutes (60)",
    "STUDIO_ALLOW_PRIVATE_URLS": "1: photo URLs may point into the server's own network (off)",
    "STUDIO_URL_ALLOWLIST": "private hosts or networks photo URLs may reach, comma-separated",
    "STUDIO_DOWNLOAD_CACHE_MB": "the photo download cache's cap in MB (500)",
    "STUDIO_DEMO_DATA": "the demo catalogue's folder (the shared Flipkart sample)",
    "STUDIO_TRAIN_OPTIONS": "retraining options as JSON, e.g. {\"folds\": 5}",
    "STUDIO_EXPLAIN_WARM_UP": "0: do not warm the explainer up when the app loads a model",
    "MLFLOW_TRACKING_URI": "log every training run to MLflow as well",
}
_TRUE = ("1", "true", "yes", "on")


def _number(raw: str | None, default: float | None) -> float | None:
    try:
        value = float(raw) if raw not in (None, "") else default
    except ValueError:
        return default
    return value if value is None or math.isfinite(value) else default


@dataclass(frozen=True)
class Settings:
    """What the environment says, read in one place (`get_settings`); everything else
    receives it. Missing or unreadable values fall back to the defaults."""

    home: Path
    port: int = 8501
    address: str = "127.0.0.1"
    admin_user: str = "admin"
    admin_password: str = ""
    session_idle_minutes: float | None = None  # None: core.studio.sessions' default
    allow_private_urls: bool = False
    url_allowlist: tuple[str, ...] = ()
    download_cache_mb: float | None = None  # None: core.data.catalogue's default
    demo_data: Path | None = None
    train_options: str = ""
    explain_warm_up: bool = True
    mlflow_tracking_uri: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Settings":
        home = environ.get("STUDIO_HOME")
        port = _number(environ.get("STUDIO_PORT"), 8501)
        demo = environ.get("STUDIO_DEMO_DATA")
        return cls(
            home=Path(home).expanduser().resolve() if home else REPO_ROOT,
            port=int(port) if port and 0 < port < 65536 else 8501,
            address=environ.get("STUDIO_ADDRESS", "").strip() or "127.0.0.1",
            admin_user=environ.get("STUDIO_ADMIN_USER", "").strip() or "admin",
            admin_password=environ.get("STUDIO_ADMIN_PASSWORD", ""),
            session_idle_minutes=_number(environ.get("STUDIO_SESSION_IDLE_MINUTES"), None),
            allow_private_urls=environ.get("STUDIO_ALLOW_PRIVATE_URLS", "").strip().lower() in _TRUE,
            url_allowlist=tuple(item.strip() for item in environ.get("STUDIO_URL_ALLOWLIST", "").split(",")
                                if item.strip()),
            download_cache_mb=_number(environ.get("STUDIO_DOWNLOAD_CACHE_MB", "").strip(), None),
            demo_data=Path(demo).expanduser() if demo else None,
            train_options=environ.get("STUDIO_TRAIN_OPTIONS", "").strip(),
            explain_warm_up=environ.get("STUDIO_EXPLAIN_WARM_UP", "1").strip() != "0",
            mlflow_tracking_uri=environ.get("MLFLOW_TRACKING_URI", "").strip(),
        )

    @property
    def models_dir(self) -> Path:
        """Trained bundles. Inside the checkout this is the top-level `models/`."""
        return self.home / "models"

    @property
    def data_dir(self) -> Path:
        """Caches, database and uploads."""
        return self.home / "data"

    @property
    def weights_dir(self) -> Path:
        return self.data_dir / "weights"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


@lru_cache(maxsize=8)
def _settings_for(snapshot: tuple[tuple[str, str], ...]) -> Settings:
    return Settings.from_environ(dict(snapshot))


def get_settings() -> Settings:
    """The settings: the one reader of the environment. Built once per distinct set of
    values, so a changed variable (an admin's restart, a test's monkeypatch) applies at the
    next call without anyone else reading os.environ."""
    return _settings_for(tuple((name, os.environ[name]) for name in ENVIRONMENT if name in os.environ))


def studio_environment() -> dict[str, str]:
    """The studio's settings as environment variables (the ones set here), for processes
    started elsewhere that must see the same home and rules (a Ray cluster's workers)."""
    return {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create `path` (and missing parents) readable by its owner only (0700): it holds
    the database, uploads and caches. `tighten`: also take group/other access away from
    an existing folder of ours (a folder created before this rule)."""
    path = Path(path)
    existed = path.is_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (not existed or tighten) and path.stat().st_uid == os.getuid():
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask; be explicit
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty if missing, and make it owner-only (0600). SQLite gives its
    -wal / -shm files the database file's permissions."""
    path = Path(path)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o600)
    return path


_URI_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#@\s]+@")


def strip_credentials(text: str | None) -> str | None:
    """`text` with every `user:password@` removed from the URIs in it, e.g. an
    MLFLOW_TRACKING_URI quoted in a note or an error: what is stored or shown never
    carries a secret from the environment."""
    if not text:
        return text
    out = _URI_CREDENTIALS.sub(r"\g<scheme>", str(text))
    for uri in (get_settings().mlflow_tracking_uri,):
        match = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#@\s]+)@", uri)
        if match:  # the secret itself, wherever it was quoted (also outside a URI)
            userinfo = match.group(1)
            for secret in {userinfo, userinfo.partition(":")[2]}:
                if len(secret) >= 4:
                    out = out.replace(secret, "***")
    return out
