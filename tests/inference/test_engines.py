"""The batch engines: `--engine ray` gives the local engine's output row for row (labels and
probabilities), on one file, on CSV + Parquet shards, into a folder of parts; a corrupt
photo is reported the same way; a worker killed mid-job loses and duplicates nothing;
`embed` fills the cache. One local Ray cluster (2 CPUs) per module, as PITFALLS says."""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from core.cli.main import main  # noqa: E402
from core.data.csv_files import read_csv  # noqa: E402
from helpers.catalogues import write_catalogue  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TEXT = ["--text-cols", "title,description"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster whose workers import this checkout and share the module's home."""
    home = tmp_path_factory.mktemp("ray_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_HOME", str(home))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
                                           "STUDIO_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}})
        try:
            yield home
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """24 products with photos (the tiny model's classes), row 5's photo corrupt."""
    cat = write_catalogue(tmp_path_factory.mktemp("engines"), n_per_class=8, classes=("Watches", "Kitchen", "Toys"),
                          image_size=(64, 48), seed=21)
    frame = read_csv(cat.csv_path)
    (cat.image_dir / frame["image"][4]).write_bytes(b"\x89PNG\r\n\x1a\n corrupt")
    return cat


def image_args(cat) -> list[str]:
    return ["--image-col", "image", "--image-dir", str(cat.image_dir)]


def predict(capsys, bundle, data, out, *extra) -> tuple[int, str]:
    code = main(["predict", "--model", str(bundle), "--data", str(data), *TEXT, "--out", str(out), *extra])
    return code, capsys.readouterr().err


def read_out(out: Path) -> pd.DataFrame:
    if out.suffix == ".csv":
        return read_csv(out)
    parts = sorted(glob.glob(str(out / "part-*")))
    frames = [pd.read_parquet(p) if p.endswith(".parquet") else read_csv(p) for p in parts]
    return pd.concat(frames, ignore_index=True)


def assert_same(local: pd.DataFrame, other: pd.DataFrame) -> None:
    assert list(local.columns) == list(other.columns)
    assert len(local) == len(other)
    probs = [c for c in local.columns if c.startswith("p:")] + ["confidence"]
    for column in local.columns:
        if column in probs:
            a = pd.to_numeric(local[column].replace("", np.nan)).to_numpy()
            b = pd.to_numeric(other[column].replace("", np.nan)).to_numpy()
            assert np.allclose(a, b, atol=1e-6, equal_nan=True), column
        else:
            assert local[column].tolist() == other[column].tolist(), column


def report_lines(stderr: str) -> list[str]:
    """The import report and warnings (not the engine's own progress lines)."""
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line and "|" not in line and "Ray worker" not in line
            and not line.startswith(("joining Ray", "wrote ", "[", "scored"))]


def test_ray_gives_the_local_output_row_for_row(cluster, tiny_bundle, catalogue, tmp_path, capsys):
    code, local_err = predict(capsys, tiny_bundle, catalogue.csv_path, tmp_path / "local.csv", *image_args(catalogue),
                              "--probabilities")
    assert code == 0
    local = read_csv(tmp_path / "local.csv")
    assert local["image_label"][4] == "" and local["text_label"][4] != ""  # the corrupt photo: text only
    assert "row 5, column 'image'" in local_err

    code, ray_err = predict(capsys, tiny_bundle, catalogue.csv_path, tmp_path / "ray.csv", *image_args(catalogue),
                            "--probabilities", "--engine", "ray", "--workers", "2", "--batch-size", "5")
    assert code == 0, ray_err
    assert_same(local, read_csv(tmp_path / "ray.csv"))
    assert report_lines(ray_err) == report_lines(local_err)  # the same report, the corrupt photo in it

    # the same rows as two CSV shards and a Parquet one, into a folder of Parquet parts
    shards = tmp_path / "shards"
    shards.mkdir()
    frame = read_csv(catalogue.csv_path)
    frame.iloc[:9].to_csv(shards / "a.csv", index=False)
    frame.iloc[9:17].to_parquet(shards / "b.parquet", index=False)
    frame.iloc[17:].to_csv(shards / "c.csv", index=False)
    code, err = predict(capsys, tiny_bundle, shards, tmp_path / "parts", *image_args(catalogue), "--probabilities",
                        "--engine", "ray", "--workers", "2", "--batch-size", "4")
    assert code == 0, err
    assert_same(local, read_out(tmp_path / "parts"))
    assert "a.csv, row 5" not in err and "row 5, column 'image'" in err  # the shard's own row numbers
    assert len(glob.glob(str(tmp_path / "parts" / "part-*.parquet"))) >= 3

    # a glob of shards with the local engine, CSV parts
    code, err = predict(capsys, tiny_bundle, f"{shards}/*.csv", tmp_path / "csv_parts", *image_args(catalogue),
                        "--probabilities", "--out-format", "csv")
    assert code == 0, err
    expected = pd.concat([local.iloc[:9], local.iloc[17:]], ignore_index=True)
    assert_same(expected, read_out(tmp_path / "csv_parts"))




def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(cluster, tiny_bundle, catalogue, tmp_path):
    from core.inference import ray_engine
    from core.inference.engines import local_batches
    from core.inference.rows import PredictJob

    job = PredictJob(text_cols=["title", "description"], image_col="image", image_dir=str(catalogue.image_dir),
                     probabilities=True)
    marker = tmp_path / "killed"

    class Killer(ray_engine.Scorer):
        def __call__(self, batch):
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)  # the worker process dies mid-job
            return super().__call__(batch)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    got = list(ray_engine.batches([catalogue.csv_path], job, Path(tiny_bundle), workers=2, batch_size=6,
                                  scorer=Killer))
    assert marker.exists(), "the worker was never killed"
    killed = int(marker.read_text())
    assert killed != os.getpid()
    ray_rows = pd.concat([frame for _, _, frame, _ in got], ignore_index=True)
    local_rows = pd.concat([frame for _, _, frame, _ in local_batches([catalogue.csv_path], job, Path(tiny_bundle))],
                           ignore_index=True)
    assert_same(local_rows, ray_rows)
    assert sorted(start for _, start, _, _ in got) == [0, 6, 12, 18]


def test_engines_refuse_bad_input(cluster, tiny_bundle, catalogue, tmp_path, capsys, monkeypatch):
    bad = [
        ([str(tmp_path / "nothing-here")], "no .csv or .parquet file"),
        ([str(tmp_path / "none-*.csv")], "no CSV or Parquet file matches"),
    ]
    (tmp_path / "nothing-here").mkdir()
    for data, words in bad:
        code, err = predict(capsys, tiny_bundle, data[0], tmp_path / "o.csv", "--engine", "ray")
        assert code == 2 and words in err, err
    code, err = predict(capsys, tiny_bundle, catalogue.csv_path, tmp_path / "o.csv", "--workers", "0")
    assert code == 2 and "--workers" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    code, err = predict(capsys, tiny_bundle, catalogue.csv_path, busy, "--engine", "ray")
    assert code == 2 and "not an empty folder" in err and (busy / "keep.txt").read_text() == "mine"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    frame = read_csv(catalogue.csv_path)
    frame.iloc[:10].to_csv(mixed / "a.csv", index=False)
    frame.iloc[10:].rename(columns={"description": "details"}).to_csv(mixed / "b.csv", index=False)
    code, err = predict(capsys, tiny_bundle, mixed, tmp_path / "mixed.csv", "--engine", "ray", "--batch-size", "4")
    assert code == 2 and "details" in err or "description" in err, err
    assert not (tmp_path / "mixed.csv").exists() and not list(tmp_path.glob(".mixed.csv*"))  # nothing half-written

    import core.inference

    monkeypatch.setitem(sys.modules, "core.inference.ray_engine", None)  # as if Ray were not installed
    monkeypatch.delattr(core.inference, "ray_engine", raising=False)
    code, err = predict(capsys, tiny_bundle, catalogue.csv_path, tmp_path / "o.csv", "--engine", "ray")
    assert code == 2 and "pip install -r requirements-scale.txt" in err
    code = main(["embed", "--data", str(catalogue.csv_path), "--image-col", "image", "--engine", "ray"])
    assert code == 2 and "requirements-scale.txt" in capsys.readouterr().err


def test_embed_with_ray_fills_the_cache_the_trainer_reads(cluster, catalogue, tmp_path, capsys):
    from core.models.embeddings import EmbeddingCache

    def cached() -> int:
        with EmbeddingCache()._connect() as db:
            return db.execute("SELECT count(*) FROM embeddings").fetchone()[0]

    args = ["embed", "--data", str(catalogue.csv_path), "--image-col", "image", "--image-dir",
            str(catalogue.image_dir), "--quiet"]  # real Lite0 weights: the same key in every process
    before = cached()
    assert main([*args, "--engine", "ray", "--workers", "2", "--batch-size", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 24 and out["photos"] == 23 and out["embedded"] == 23 and out["missing"] == 1
    assert out["missing_rows"][0]["row"] == 5
    assert cached() - before == 46  # every usable photo, plain and mirrored, written by the workers
    assert main([*args, "--engine", "local"]) == 0  # all cached now: the same answer, nothing new
    assert json.loads(capsys.readouterr().out)["embedded"] == 23
    assert cached() - before == 46
