"""`python -m core demo`: the README's run command trains the demo model once, then reuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from conftest import write_catalogue

REPO = Path(__file__).resolve().parents[1]


def _flipkart_shaped(root: Path) -> Path:
    """A small catalogue with the demo's column names (Flipkart's)."""
    cat = write_catalogue(root, n_per_class=8, label_format="tree", seed=3)
    frame = pd.read_csv(cat.csv_path, dtype=str, keep_default_na=False)
    frame = frame.rename(columns={"title": "product_name", "category": "product_category_tree"})
    frame.to_csv(root / "products.csv", index=False)
    return root


def _demo(home: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_DEMO_DATA": str(data)}
    return subprocess.run([sys.executable, "-m", "core", "demo"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_demo_trains_once_then_reuses_the_model(tmp_path):
    data = _flipkart_shaped(tmp_path / "demo")
    first = _demo(tmp_path / "home", data)
    assert first.returncode == 0, first.stderr[-2000:]
    model = tmp_path / "home" / "models" / "demo"
    assert f"demo model ready: {model}" in first.stdout
    assert (model / "metadata.json").is_file() and (model / "text_model.keras").is_file()
    stamp = (model / "metadata.json").stat().st_mtime_ns

    second = _demo(tmp_path / "home", data)
    assert second.returncode == 0 and f"demo model ready: {model}" in second.stdout
    assert (model / "metadata.json").stat().st_mtime_ns == stamp  # not retrained
    assert "training on" not in second.stderr


def test_demo_without_data_says_where_to_point_it(tmp_path):
    proc = _demo(tmp_path / "home", tmp_path / "nowhere")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no demo catalogue at")
    assert "STUDIO_DEMO_DATA" in lines[0] and "Traceback" not in proc.stderr
