"""`python -m core train|predict|evaluate` as a user runs it: subprocesses with their own
STUDIO_HOME, a generated catalogue, and bad inputs that must end in one clean error line."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.catalogues import write_catalogue
from helpers.cli import run_cli, stderr_lines
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]

def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# Header names with spaces around them, as some exported catalogues have; the flags below
# also carry spaces. Both sides are trimmed before matching.
SPACED_HEADER = [" title ", "description  ", "  category", " image "]
MAPPING = ["--text-cols", " title, description ", "--label-col", " category ", "--image-col", "image"]
BOMB_ROW, CORRUPT_ROW, MISSING_ROW, EMPTY_ROW = 5, 3, 1, 10


def spaced_copy(cat, path: Path, extra_rows: list[list[str]] = ()) -> Path:
    rows = [[r["title"], r["description"], r["category"], r["image"]] for r in cat.rows]
    return write_csv(path, ["id"] + SPACED_HEADER, [[f"{i:03d}"] + r for i, r in enumerate(rows + list(extra_rows), 1)])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studio_home")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


def break_images(cat, corrupt_row: int, bomb_row: int) -> None:
    """Truncate one row's PNG and replace another's with a decompression bomb."""
    corrupt = cat.image_dir / cat.rows[corrupt_row - 1]["image"]
    corrupt.write_bytes(corrupt.read_bytes()[:60])
    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buf, "PNG")  # 100 MP in a few kB
    (cat.image_dir / cat.rows[bomb_row - 1]["image"]).write_bytes(buf.getvalue())


def image_problem(lines: list[str], row: int) -> str:
    """The one stderr line reporting the image of `row`."""
    found = [line for line in lines if f"row {row}, column 'image'" in line]
    assert len(found) == 1, lines
    return found[0]


@pytest.fixture(scope="module")
def model(home, work):
    """A bundle trained through the CLI (random mobilenet_v2: offline, and its
    keras.applications layers must survive a bundle round trip). Row 2's image is
    truncated and row 4's is a decompression bomb: training goes on without them."""
    cat = write_catalogue(work / "train", n_per_class=7, seed=10)
    break_images(cat, corrupt_row=2, bomb_row=4)
    data = spaced_copy(cat, work / "train" / "train.csv")
    out = work / "model"
    proc = run_cli(home, "train", "--data", data, *MAPPING, "--image-dir", cat.image_dir, "--out", out,
                   "--no-pretrained", "--backbone", "mobilenet_v2", "--folds", "2", "--epochs", "6")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the summary alone: `train … | jq` works
    assert Path(summary["model"]) == out.resolve()
    assert set(summary["validation"]) == {"fused", "text", "image"}
    return {"dir": out, "summary": summary, "classes": cat.classes, "proc": proc, "rows": len(cat.rows)}


@pytest.fixture(scope="module")
def new_products(work):
    """Unseen products to predict: row 1's image file is missing, row 3's is a truncated
    PNG, row 5's a decompression bomb, and row 10 has neither text nor image."""
    cat = write_catalogue(work / "new", n_per_class=3, seed=11, missing_images=1)
    assert cat.missing_rows == [MISSING_ROW]
    break_images(cat, CORRUPT_ROW, BOMB_ROW)
    data = spaced_copy(cat, work / "new" / "new.csv", extra_rows=[["", "", "Toys", ""]])
    return {"csv": data, "cat": cat, "labels": cat.labels + ["Toys"]}


@pytest.fixture(scope="module")
def predicted(home, work, model, new_products):
    out = work / "predictions.csv"
    proc = run_cli(home, "predict", "--model", model["dir"], "--data", new_products["csv"],
                   "--text-cols", "title,description", "--image-col", " image ",
                   "--image-dir", new_products["cat"].image_dir, "--out", out, "--probabilities")
    return {"proc": proc, "out": out}


def test_train_bundle(model):
    assert (model["dir"] / "metadata.json").is_file()
    md = json.loads((model["dir"] / "metadata.json").read_text())
    assert md["backbone"] == "mobilenet_v2" and md["config"]["weights"] is None
    assert md["source"]["text_cols"] == ["title", "description"] and md["source"]["label_col"] == "category"
    assert md["rows"]["used"] == model["rows"] == 21
    assert md["rows"]["with_image"] == 21 - 2  # the truncated image and the bomb left out
    assert json.loads((model["dir"] / "labels.json").read_text()) == model["classes"]
    assert model["summary"]["version"] == md["version"]


def test_train_prints_only_its_json_on_stdout_and_progress_on_stderr(model):
    proc = model["proc"]  # run without --quiet: progress on
    assert json.loads(proc.stdout) == model["summary"]
    assert "\x1b" not in proc.stdout and "\x1b" not in proc.stderr  # no progress-bar escape codes
    lines = stderr_lines(proc)
    assert [line for line in lines if line.startswith("text model: level ")] == ["text model: level 1/1 (3 classes)"]
    assert any(line.startswith("calibrated on ") and "temperature" in line for line in lines), lines


def test_train_reports_broken_images_and_goes_on(model):
    lines = stderr_lines(model["proc"])
    assert "Traceback" not in model["proc"].stderr
    assert "truncated or corrupt" in image_problem(lines, 2)
    assert "image too large (10000×10000 px)" in image_problem(lines, 4)


def test_predict_writes_every_input_column_and_the_predictions(predicted, new_products, model):
    proc = predicted["proc"]
    assert proc.returncode == 0, proc.stderr
    header, rows = read_rows(predicted["out"])
    prob_cols = [f"p:{c}" for c in model["classes"]]
    assert header == ["id", "title", "description", "category", "image", "predicted_label", "confidence",
                      "text_label", "image_label", *prob_cols]
    cat = new_products["cat"]
    assert len(rows) == len(cat.rows) + 1
    for i, (row, source) in enumerate(zip(rows, cat.rows), 1):
        assert row["id"] == f"{i:03d}"  # kept as text: leading zeros survive
        assert all(row[k] == source[k] for k in ("title", "description", "category", "image"))
        assert row["predicted_label"] in model["classes"] and row["text_label"] in model["classes"]
        probs = [float(row[c]) for c in prob_cols]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert float(row["confidence"]) == pytest.approx(max(probs), abs=1e-6)
        assert row["predicted_label"] == model["classes"][probs.index(max(probs))]
        no_image = i in (MISSING_ROW, CORRUPT_ROW, BOMB_ROW)
        assert (row["image_label"] == "") == no_image, (i, row)
        if no_image:  # text alone decides
            assert row["predicted_label"] == row["text_label"]
    empty = rows[EMPTY_ROW - 1]
    assert all(empty[k] == "" for k in ("predicted_label", "confidence", "text_label", "image_label", *prob_cols))
    # the model knows its words: unseen products are classified from their text (chance: 1/3)
    hits = [r["text_label"] == label for r, label in zip(rows, new_products["labels"][:-1])]
    assert sum(hits) / len(hits) >= 0.6
    assert not list(predicted["out"].parent.glob(".predictions.csv.*"))  # no temp file left


def test_predict_reports_unusable_images_and_rows_without_crashing(predicted, new_products):
    err = predicted["proc"].stderr
    assert predicted["proc"].returncode == 0 and "Traceback" not in err
    lines = stderr_lines(predicted["proc"])
    assert "image too large (10000×10000 px)" in image_problem(lines, BOMB_ROW)
    assert "truncated or corrupt" in image_problem(lines, CORRUPT_ROW)
    assert "file not found" in image_problem(lines, MISSING_ROW)
    assert any("3 images missing (rows 1, 3, 5)" in l for l in lines), lines
    warning = [l for l in lines if l.startswith("warning:")]
    assert len(warning) == 1 and f"(rows {EMPTY_ROW})" in warning[0]


def test_evaluate_prints_metrics_json(home, model, new_products):
    proc = run_cli(home, "evaluate", "--model", model["dir"], "--data", new_products["csv"], *MAPPING,
                   "--image-dir", new_products["cat"].image_dir, "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    n = len(new_products["labels"])
    assert metrics["rows"]["total"] == n and metrics["rows"]["unusable"] == 1
    assert metrics["rows"]["unknown_labels"] == [] and metrics["rows"]["unlabelled"] == 0
    assert metrics["model_version"] == model["summary"]["version"]
    expected_n = {"fused": n - 1, "text": n - 1, "image": n - 1 - 3}
    for part, count in expected_n.items():
        m = metrics[part]
        assert m["n"] == count
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        assert set(m["per_class_f1"]) <= set(model["classes"])
        cm = m["confusion_matrix"]
        assert cm["labels"] == model["classes"]
        assert sum(map(sum, cm["matrix"])) == count
        assert sum(cm["matrix"][i][i] for i in range(len(cm["labels"]))) == round(m["accuracy"] * count)
    assert metrics["text"]["accuracy"] >= 0.6 and metrics["fused"]["accuracy"] >= 0.6  # chance: 1/3


# --------------------------------------------------------------------------- help


VISIBLE_COMMANDS = ["train", "predict", "embed", "evaluate", "suspects", "demo", "import", "export", "explain",
                    "serve", "api", "users", "models"]


def test_help_lists_the_commands_a_person_runs_and_no_internal_one():
    proc = subprocess.run([sys.executable, "-m", "core", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SUPPRESS" not in proc.stdout and "job-worker" not in proc.stdout
    assert "{" + ",".join(VISIBLE_COMMANDS) + "}" in proc.stdout
    listed = re.findall(r"^    (\S+)\s", proc.stdout, flags=re.M)
    assert listed == VISIBLE_COMMANDS
    from core.cli.parser import build_parser

    assert build_parser().parse_args(["job-worker", "7"]).job_id == 7  # hidden, still there for the job runner


@pytest.mark.parametrize("command, flag, default", [
    ("train", "--text-arch", "tfidf"), ("train", "--backbone", "efficientnet_lite0"),
    ("suspects", "--backbone", "efficientnet_lite0"),
])
def test_architecture_flags_say_their_choices_and_default(capsys, command, flag, default):
    from core.cli.parser import build_parser
    from core.models.options import BACKBONE_NAMES, TEXT_ARCHS

    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    options = " ".join(capsys.readouterr().out.split()).split("options:", 1)[1]  # argparse wraps lines
    line = options[options.index(f"{flag} "):]
    line = line[:line.find(" --", 3)]  # up to the next flag
    choices = TEXT_ARCHS if flag == "--text-arch" else BACKBONE_NAMES
    assert all(choice in line for choice in choices), line
    assert f"(default {default})" in line, line
    required = ["--data", "x.csv", "--text-cols", "t", "--label-col", "l", "--out", "o.csv"] * (command == "suspects")
    args = build_parser().parse_args([command, *required, flag, choices[1]])
    assert getattr(args, flag[2:].replace("-", "_")) == choices[1]


# --------------------------------------------------------------------------- serve


def test_serve_on_a_busy_port_says_so_before_any_url(tmp_path):
    with socket.socket() as server:  # a server already on the port (another Catalog Studio, say)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        proc = run_cli(tmp_path / "home", "serve", "--port", port, "--address", "127.0.0.1", "--no-demo",
                       timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "http://" not in proc.stdout + proc.stderr
    assert stderr_lines(proc) == [f"error: port {port} is in use (another Catalog Studio?); choose another with "
                                  "--port"]


def test_port_in_use_tells_a_listening_port_from_a_free_one():
    from core.cli.serve import port_in_use

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port_in_use("127.0.0.1", port) and port_in_use("0.0.0.0", port)
    assert not port_in_use("127.0.0.1", port)


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_runs(home, work, model):
    """Every bad-input command, run two at a time (each pays TensorFlow's import)."""
    d = work / "bad"
    d.mkdir()
    cat = write_catalogue(d / "tree", n_per_class=2, label_format="tree", with_images=False, seed=12)
    empty = d / "empty.csv"
    empty.write_bytes(b"")
    single = write_csv(d / "single.csv", ["title", "category"], [["red watch", "Watches"], ["blue watch", "Watches"]])
    latin = d / "latin.csv"
    latin.write_bytes("title,category\nwatch,Watches\ncaf\u00e9 kettle,Kitchen\n".encode("latin-1"))
    not_bundle = d / "not_a_model"
    not_bundle.mkdir()
    (not_bundle / "text_model.keras").write_text("x")
    existing = d / "existing.csv"
    existing.write_text("old,predictions\n1,2\n")

    train = ["train", "--out", d / "never", "--no-pretrained", "--quiet"]
    cases = {
        "missing_column": [*train, "--data", cat.csv_path, "--text-cols", "title,colour", "--label-col", "category"],
        "label_too_deep": [*train, "--data", cat.csv_path, "--text-cols", "title", "--label-col", "category",
                           "--label-level", "4"],
        "empty_file": [*train, "--data", empty, "--text-cols", "title", "--label-col", "category"],
        "single_class": [*train, "--data", single, "--text-cols", "title", "--label-col", "category"],
        "undecodable": [*train, "--data", latin, "--text-cols", "title", "--label-col", "category"],
        "not_a_bundle": ["predict", "--model", not_bundle, "--data", cat.csv_path, "--text-cols", "title",
                         "--out", d / "out.csv"],
        "predict_missing_column": ["predict", "--model", model["dir"], "--data", cat.csv_path,
                                   "--text-cols", "title,nope", "--out", existing, "--quiet"],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(cases, pool.map(lambda argv: run_cli(home, *argv, timeout=180), cases.values())))
    return {"results": results, "dir": d, "existing": existing}


BAD_INPUTS = {
    # case: fragments the one error line must contain
    "missing_column": ["products.csv", "no text column 'colour'", "'title'"],
    "label_too_deep": ["products.csv", "--label-level 4", "column 'category'", "3 levels"],
    "empty_file": ["empty.csv", "empty"],
    "single_class": ["single.csv", "only one class 'Watches'", "column 'category'"],
    "undecodable": ["latin.csv", "line 3", "0xe9", "--encoding latin-1"],
    "not_a_bundle": ["not_a_model", "not a model bundle"],
    "predict_missing_column": ["products.csv", "no text column 'nope'"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_an_error_line_naming_the_problem(bad_runs, case):
    proc = bad_runs["results"][case]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    for fragment in BAD_INPUTS[case]:
        assert fragment in lines[0], (fragment, lines[0])
    assert proc.stdout == ""
    assert not (bad_runs["dir"] / "never").exists()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_stderr_is_exactly_that_one_line(bad_runs, case):
    proc = bad_runs["results"][case]
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == stderr_lines(proc), proc.stderr


def test_failed_predict_leaves_the_existing_output_untouched(bad_runs):
    assert bad_runs["results"]["predict_missing_column"].returncode == 2
    assert bad_runs["existing"].read_text() == "old,predictions\n1,2\n"
    assert sorted(p.name for p in bad_runs["existing"].parent.glob(".existing.csv*")) == []
    assert not (bad_runs["dir"] / "out.csv").exists()
