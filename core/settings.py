"""Where runtime state lives. One home for everything (bundles, caches, database,
uploads) so that STUDIO_HOME moves it all at once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


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
