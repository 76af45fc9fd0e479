"""`python -m core import|export` as an admin runs them from the shell: real subprocesses on
their own STUDIO_HOME, a generated catalogue imported twice (nothing doubled), an export
that shows a reviewer's correction, and bad input ending in one `error:` line, exit 2."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.catalogues import write_catalogue
from helpers.cli import run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
MAPPING = ["--text-cols", "title,description", "--label-col", "category", "--image-col", "image"]


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line bad input must end with (exit status 2)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def store_of(home: Path):
    from core.studio.store import Store

    return Store(home / "data" / "studio.db")


@pytest.fixture
def cat(tmp_path):
    return write_catalogue(tmp_path / "cat", n_per_class=5, classes=("Kitchen", "Toys", "Watches"))


def with_ids(cat, path: Path, relabel: dict[int, str] | None = None) -> Path:
    """The catalogue with an `sku` column (and some rows relabelled), images beside it."""
    relabel = relabel or {}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "title", "description", "category", "image"])
        for i, row in enumerate(cat.rows):
            writer.writerow([f"SKU-{i:03d}", row["title"], row["description"], relabel.get(i, row["category"]),
                             row["image"]])
    return path


def test_import_twice_adds_nothing_the_second_time(tmp_path, cat):
    home = tmp_path / "home"
    first = run_cli(home, "import", "--data", cat.csv_path, *MAPPING, "--image-dir", cat.image_dir, "--name", "shop")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    n = len(cat.rows)
    assert (summary["source"], summary["added"], summary["updated"], summary["unchanged"]) == (
        "catalogue:shop", n, 0, 0)
    assert summary["per_class"] == {"Kitchen": 5, "Toys": 5, "Watches": 5}
    assert f"{n} new, 0 updated, 0 unchanged" in first.stderr

    second = run_cli(home, "import", "--data", cat.csv_path, *MAPPING, "--image-dir", cat.image_dir, "--name", "shop")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert (again["added"], again["updated"], again["unchanged"], again["eval_rows"]) == (0, 0, n, 0)
    assert "0 new, 0 updated" in second.stderr
    store = store_of(home)
    assert store.one("SELECT COUNT(*) AS n FROM products")["n"] == n
    assert store.one("SELECT COUNT(DISTINCT content_key) AS n FROM products")["n"] == n
    assert store.one("SELECT COUNT(*) AS n FROM images")["n"] == n
    audits = store.query("SELECT user FROM audit WHERE action = 'catalogue.import'")
    assert [a["user"] for a in audits] == ["cli", "cli"]


def test_import_by_id_column_updates_changed_labels(tmp_path, cat):
    home = tmp_path / "home"
    csv_path = with_ids(cat, cat.csv_path.parent / "with_ids.csv")
    args = ["import", "--data", csv_path, *MAPPING, "--image-dir", cat.image_dir, "--id-col", "sku"]
    assert json.loads(run_cli(home, *args).stdout)["added"] == len(cat.rows)
    old = cat.rows[0]["category"]
    new = next(c for c in ("Kitchen", "Toys", "Watches") if c != old)
    with_ids(cat, csv_path, relabel={0: new})
    proc = run_cli(home, *args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["added"], summary["updated"], summary["unchanged"]) == (0, 1, len(cat.rows) - 1)
    assert summary["source"] == "catalogue:with_ids"  # the CSV's name when --name is left out
    row = store_of(home).one("SELECT true_label FROM products WHERE external_id = 'SKU-000'")
    assert row["true_label"] == new


def test_export_shows_a_correction_and_the_decision_log(tmp_path, cat, monkeypatch):
    from helpers.studio import cheap_hashes, make_users

    from core.studio.review_queue import record_review

    home = tmp_path / "home"
    assert run_cli(home, "import", "--data", cat.csv_path, *MAPPING, "--image-dir", cat.image_dir).returncode == 0
    store = store_of(home)
    product = store.one("SELECT id, true_label FROM products ORDER BY id LIMIT 1")
    new = next(c for c in ("Kitchen", "Toys", "Watches") if c != product["true_label"])
    cheap_hashes(monkeypatch)
    rita = make_users(store, ("rita", "reviewer"))["rita"]  # a real reviewer: record_review re-reads her row
    record_review(store, rita, product["id"], "correct", new_label=new)

    out = tmp_path / "exports" / "dataset.csv"
    proc = run_cli(home, "export", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"out": str(out), "rows": len(cat.rows), "what": "products"}
    frame = pd.read_csv(out, keep_default_na=False).set_index("product_id")
    assert (frame.loc[product["id"], "label"], frame.loc[product["id"], "label_source"]) == (new, "reviewer")
    assert set(frame["label_source"]) == {"catalogue", "reviewer"}
    assert all((home / p).is_file() for p in frame["image_path"])
    assert frame["eval_slice"].dtype == bool and frame["eval_slice"].any()

    log_path = tmp_path / "exports" / "decisions.parquet"
    proc = run_cli(home, "export", "--out", log_path, "--decisions")
    assert proc.returncode == 0, proc.stderr
    log = pd.read_parquet(log_path)
    assert log[["product_id", "decision", "new_label", "reviewer"]].values.tolist() == [
        [product["id"], "correct", new, "rita"]]


def test_bad_input_is_one_error_line_and_exit_2(tmp_path, cat):
    home = tmp_path / "home"
    base = ["import", "--data", cat.csv_path, "--image-dir", cat.image_dir]
    assert "no-such.csv" in error_line(run_cli(home, "import", "--data", tmp_path / "no-such.csv", *MAPPING))
    assert "'headline'" in error_line(run_cli(home, *base, "--text-cols", "headline", "--label-col", "category"))
    assert "'kind'" in error_line(run_cli(home, *base, "--text-cols", "title", "--label-col", "kind"))
    # found after the photos were checked: --quiet leaves out that progress bar
    assert "'sku'" in error_line(run_cli(home, *base, *MAPPING, "--id-col", "sku", "--quiet"))
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("title,category\nsome skillet,Kitchen\nanother skillet,Kitchen\n", encoding="utf-8")
    error_line(run_cli(home, "import", "--data", one_class, "--text-cols", "title", "--label-col", "category"))
    assert not (home / "data" / "studio.db").exists() or store_of(home).one(
        "SELECT COUNT(*) AS n FROM products")["n"] == 0

    line = error_line(run_cli(home, "export", "--out", tmp_path / "dataset.xlsx"))
    assert "'.xlsx'" in line and ".csv" in line and ".parquet" in line
    assert not (tmp_path / "dataset.xlsx").exists()
    (tmp_path / "taken.csv").mkdir()
    assert "folder" in error_line(run_cli(home, "export", "--out", tmp_path / "taken.csv"))
    usage = run_cli(home, "export")  # --out is required: argparse's usage error, exit 2
    assert usage.returncode == 2 and "--out" in usage.stderr


def test_help_does_not_load_tensorflow(tmp_path):
    code = ("import sys\nfrom core.cli.main import main\nfor command in ('import', 'export'):\n"
            "    try:\n        main([command, '--help'])\n    except SystemExit:\n        pass\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "STUDIO_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert "--id-col" in proc.stdout and "--decisions" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "False False"
