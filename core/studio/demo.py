"""The demo catalogue (the shared Flipkart sample) and the model trained on it, so the
first run of the app has something to show without any setting."""

from __future__ import annotations

from pathlib import Path

from core.common.settings import REPO_ROOT, get_settings

DEMO_MODEL_NAME = "demo"


def demo_data_dir() -> Path:
    """STUDIO_DEMO_DATA, else the workspace's shared Flipkart sample beside the checkout."""
    return get_settings().demo_data or REPO_ROOT.parent / "shared" / "data" / "flipkart"


def demo_model_dir() -> Path:
    return get_settings().models_dir / DEMO_MODEL_NAME


DEMO_DEPTH = 3  # Flipkart's tree: 7 > 60 > 211 categories, then product names


def load_demo_catalogue(data_dir: Path | None = None, *, progress: bool = False):
    """The Flipkart-shaped demo catalogue (products.csv + images/), category = the first
    three levels of its category tree (below them, each node is one product's name). The
    one place that knows its columns."""
    from core.common.errors import InputError
    from core.data.catalogue import load_catalogue

    data_dir = Path(data_dir) if data_dir else demo_data_dir()
    csv = data_dir / "products.csv"
    if not csv.is_file():
        raise InputError(f"no demo catalogue at {csv}; set STUDIO_DEMO_DATA to a folder with products.csv "
                         "and images/, or train your own with `python -m core train …`")
    return load_catalogue(csv, text_cols=["product_name", "description"], label_col="product_category_tree",
                          label_depth=DEMO_DEPTH, image_col="image", image_dir=data_dir / "images",
                          require_labels=True, progress=progress)


def ensure_demo_model(data_dir: Path | None = None, *, force: bool = False, verbose: bool = True) -> Path:
    """Train the demo bundle unless one exists; returns its directory."""
    from core.models.bundle import is_bundle
    from core.training.trainer import Trainer

    out = demo_model_dir()
    if is_bundle(out) and not force:
        return out
    catalogue = load_demo_catalogue(data_dir, progress=verbose)
    return Trainer(verbose=verbose).fit(catalogue).save(out)
