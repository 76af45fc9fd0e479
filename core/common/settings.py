"""Where runtime state lives. One home for everything (bundles, caches, database,
uploads) so that STUDIO_HOME moves it all at once."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    home: Path

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


def get_settings() -> Settings:
    """Read STUDIO_HOME each call, so tests can point it at a temporary folder."""
    home = os.environ.get("STUDIO_HOME")
    return Settings(home=Path(home).expanduser().resolve() if home else REPO_ROOT)


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
    for name in ("MLFLOW_TRACKING_URI",):
        uri = os.environ.get(name, "")
        match = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#@\s]+)@", uri)
        if match:  # the secret itself, wherever it was quoted (also outside a URI)
            userinfo = match.group(1)
            for secret in {userinfo, userinfo.partition(":")[2]}:
                if len(secret) >= 4:
                    out = out.replace(secret, "***")
    return out
