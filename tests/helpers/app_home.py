"""A runtime home for app tests: a small real model (trained once per test session on
a generated catalogue), registered as live, and one user per role with known passwords.
Imported by conftest (fixtures `tiny_bundle`, `app_home`) and by the browser test."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PASSWORDS = {"admin": "chief-pass-1", "rita": "reviewer-pass-1", "victor": "viewer-pass-1"}
ROLES = {"admin": "admin", "rita": "reviewer", "victor": "viewer"}


def train_tiny_bundle(root: Path) -> Path:
    """Train a real bundle (text + random-weight Lite0 image model + fusion) on a generated
    catalogue; returns the bundle folder. Run with STUDIO_HOME already pointing at a
    scratch home (embedding cache and weights go there)."""
    from core.data.catalogue import load_catalogue
    from core.models.tf_setup import seed_everything
    from core.training.trainer import TrainConfig, Trainer
    from helpers.catalogues import write_catalogue

    cat = write_catalogue(root / "catalogue", n_per_class=14, classes=("Watches", "Kitchen", "Toys"),
                          image_size=(64, 48), seed=3)
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    seed_everything(0)
    classifier = Trainer(TrainConfig(weights=None, folds=2, text_epochs=6, image_epochs=10, seed=0),
                         verbose=False).fit(catalogue)
    return classifier.save(root / "bundle")


@dataclass
class AppHome:
    home: Path
    bundle: Path
    catalogue_csv: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "STUDIO_HOME": str(self.home)}


def build_app_home(home: Path, bundle: Path, *, catalogue_csv: Path | None = None) -> AppHome:
    """A fresh home with `bundle` copied in as the live model and three users. Setting
    STUDIO_HOME is the caller's job (monkeypatch or a subprocess env)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle, home / "models" / "tiny")
    previous = os.environ.get("STUDIO_HOME")
    os.environ["STUDIO_HOME"] = str(home)
    try:
        from core.studio.auth import create_user
        from core.studio.registry import sync_models
        from core.studio.store import Store

        store = Store()
        admin = create_user(store, "admin", PASSWORDS["admin"], "admin")
        for name in ("rita", "victor"):
            create_user(store, name, PASSWORDS[name], ROLES[name], by=admin)
        sync_models(store)
    finally:
        if previous is None:
            os.environ.pop("STUDIO_HOME", None)
        else:
            os.environ["STUDIO_HOME"] = previous
    return AppHome(home, home / "models" / "tiny", catalogue_csv or bundle.parent / "catalogue" / "products.csv")


def import_catalogue_into(built: AppHome) -> int:
    """Import the tiny model's own generated catalogue into the home's database (so the
    app can retrain from it); returns the number of products added."""
    previous = os.environ.get("STUDIO_HOME")
    os.environ["STUDIO_HOME"] = str(built.home)
    try:
        from core.data.catalogue import load_catalogue
        from core.studio.auth import User
        from core.studio.labels import import_catalogue
        from core.studio.store import Store

        catalogue = load_catalogue(built.catalogue_csv, text_cols=["title", "description"], label_col="category",
                                   image_col="image", image_dir=built.catalogue_csv.parent / "images")
        return import_catalogue(Store(), User.system("test"), catalogue, "tiny").added
    finally:
        if previous is None:
            os.environ.pop("STUDIO_HOME", None)
        else:
            os.environ["STUDIO_HOME"] = previous


#: Fast training for app tests that retrain (read by core.studio.retrain.default_config).
FAST_TRAINING = '{"weights": null, "folds": 2, "text_epochs": 6, "image_epochs": 10}'
