"""Category trees through the command line, as other programs drive it: `train` on one
column per level, `predict` with the path columns and `--min-confidence`, `evaluate` per
level — and a bundle saved before trees existed still loads and predicts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers.catalogues import TREE, write_tree_csv
from helpers.cli import run_cli


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


LABELS = ["--text-cols", "title", "--label-col", "master, sub ,article"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("tree")
    home = work / "home"
    data = write_tree_csv(work / "train.csv", n_per_leaf=14, seed=1, partial=2, rare=True)
    proc = run_cli(home, "train", "--data", data, *LABELS, "--out", work / "model", "--folds", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return {"home": home, "work": work, "model": work / "model", "summary": json.loads(proc.stdout)}


def test_train_learns_every_level_and_reports_each(trained):
    model = trained["model"]
    tree = json.loads((model / "tree.json").read_text())
    assert tree["levels"][0] == ["Fashion", "Home", "Kids"]
    assert "Fashion >> Care" in tree["levels"][1] and "Home >> Care" in tree["levels"][1]
    # the leaf seen once is kept (back-off is off by default: it measured worse), partial rows are no path
    assert "Home >> Cooking >> Teapots" in tree["labels"] and "Fashion" not in tree["labels"]
    levels = trained["summary"]["validation"]["levels"]
    assert set(levels) == {"level_1", "level_2", "level_3"}
    assert levels["level_1"]["accuracy"] >= 0.9 and levels["level_3"]["accuracy"] >= 0.8
    metadata = json.loads((model / "metadata.json").read_text())
    assert metadata["tree"]["depth"] == 3 and metadata["rows"]["partial_paths"] > 0


def test_predict_writes_valid_paths_levels_and_stops_at_min_confidence(trained):
    work = trained["work"]
    new = write_tree_csv(work / "new.csv", n_per_leaf=4, seed=7)
    labels = json.loads((trained["model"] / "labels.json").read_text())
    out, cut = work / "pred.csv", work / "pred_cut.csv"
    for path, extra in ((out, ["--probabilities"]), (cut, ["--min-confidence", "0.9"])):
        proc = run_cli(trained["home"], "predict", "--model", trained["model"], "--data", new, "--text-cols", "title",
                       "--out", path, "--quiet", *extra)
        assert proc.returncode == 0, proc.stderr
    rows, cut_rows = read_rows(out), read_rows(cut)
    right = 0
    for row, cut_row in zip(rows, cut_rows):
        path = row["predicted_path"]
        assert path in labels  # never a combination of levels that does not exist
        names = [row[f"predicted_level_{k}"] for k in (1, 2, 3)]
        assert " >> ".join(n for n in names if n) == path
        assert row["predicted_label"] == [n for n in names if n][-1]
        confs = [float(row[f"confidence_level_{k}"]) for k in (1, 2, 3) if row[f"confidence_level_{k}"]]
        assert confs == sorted(confs, reverse=True)  # a level is never surer than its parent
        assert abs(float(row["confidence"]) - float(row[f"p:{path}"])) < 1e-5  # the whole path's probability
        assert abs(sum(float(row[f"p:{label}"]) for label in labels) - 1) < 1e-3
        kept = [n for n, c in zip(names, confs) if c >= 0.9]
        assert cut_row["predicted_path"] == " >> ".join(kept)  # stopped at the deepest level >= P
        assert [cut_row[f"predicted_level_{k}"] for k in (1, 2, 3)] == names  # the level columns stay full
        right += path == " >> ".join([*TREE[row["article"]], row["article"]])
    assert right / len(rows) >= 0.8
    assert any(len(r["predicted_path"].split(" >> ")) < 3 for r in cut_rows) or all(
        float(r["confidence_level_3"]) >= 0.9 for r in rows)


def test_evaluate_reports_levels_hierarchy_and_no_invalid_paths(trained):
    work = trained["work"]
    test = write_tree_csv(work / "test.csv", n_per_leaf=4, seed=9, partial=1)
    proc = run_cli(trained["home"], "evaluate", "--model", trained["model"], "--data", test, *LABELS, "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["tree"]
    fused = report["fused"]
    assert set(fused["levels"]) == {"level_1", "level_2", "level_3"}
    assert fused["levels"]["level_1"]["n"] == 6 * 5  # partial rows count at the levels they have
    assert fused["levels"]["level_3"]["n"] == 6 * 4
    assert fused["levels"]["level_1"]["accuracy"] >= 0.9
    assert fused["invalid_path_share"] == 0
    assert 0.8 <= fused["hierarchical"]["f1"] <= 1
    assert set(report) >= {"fused", "text", "image"}


def test_bad_tree_flags_are_one_line_errors(trained, tmp_path):
    data = write_tree_csv(tmp_path / "t.csv", n_per_leaf=3, seed=2)
    for flags, message in ((["--label-level", "1", "--label-depth", "2"], "not both"),
                           (["--label-depth", "0"], "--label-depth must be 1 or more")):
        proc = run_cli(trained["home"], "train", "--data", data, *LABELS, "--out", tmp_path / "m", *flags)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(trained["home"], "predict", "--model", trained["model"], "--data", data, "--text-cols", "title",
                   "--out", tmp_path / "p.csv", "--min-confidence", "1.5")
    assert proc.returncode == 2 and "--min-confidence must be between 0 and 1" in proc.stderr


def test_an_old_flat_bundle_predicts_with_todays_columns(trained, tmp_path):
    """A bundle from before trees (tests/fixtures) through `predict`: the flat output, unchanged."""
    import shutil

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    shutil.copytree(fixtures / "flat_bundle_v1", tmp_path / "old")
    out = tmp_path / "old.csv"
    proc = run_cli(trained["home"], "predict", "--model", tmp_path / "old", "--data",
                   fixtures / "flat_bundle_v1_train.csv", "--text-cols", "title", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert list(rows[0]) == ["title", "category", "predicted_label", "confidence", "text_label", "image_label"]
    assert sum(r["predicted_label"] == r["category"] for r in rows) >= 0.9 * len(rows)


def test_suspects_and_import_take_tree_labels(trained, tmp_path):
    """The same --label-col a,b,c in `suspects` (a flipped department is found, and the
    suggestion is a whole path) and `import` (the database keeps whole paths)."""
    data = write_tree_csv(tmp_path / "s.csv", n_per_leaf=10, seed=4)
    rows = read_rows(data)
    rows[0]["master"], rows[0]["sub"], rows[0]["article"] = "Kids", "Play", "Toys"  # a watch filed under Toys
    truth = rows[0]["title"]
    with open(data, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "suspects.csv"
    proc = run_cli(trained["home"], "suspects", "--data", data, *LABELS, "--out", out, "--folds", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    ranked = read_rows(out)
    assert all(r["suggested_label"].count(" >> ") == 2 for r in ranked)
    top = [r["title"] for r in ranked[:3]]
    assert truth in top, top
    proc = run_cli(tmp_path / "home", "import", "--data", data, *LABELS, "--quiet")
    assert proc.returncode == 0, proc.stderr
    from core.studio.store import Store

    store = Store(tmp_path / "home" / "data" / "studio.db")
    stored = {r["true_label"] for r in store.query("SELECT DISTINCT true_label FROM products")}
    assert stored == {" >> ".join([*TREE[a], a]) for a in TREE} | {"Kids >> Play >> Toys"}
