"""Run a scoring job over every shard with an engine: `local` (this process; the default
and the reference) or `ray` (Ray Data on a local cluster, or the one RAY_ADDRESS names).
Both yield (shard, first row, scored rows, report) in input order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from core.common.errors import InputError
from core.data.catalogue import ImportReport
from core.data.shards import read_shard
from core.inference.rows import PredictJob, ShardReport, read_rows, report_dict, score_rows
from core.inference.embed import EmbedJob, embed_rows, image_model_for
from core.inference.outputs import RowWriter

ENGINES = ("local", "ray")
INSTALL_RAY = "the ray engine needs Ray: .venv/bin/pip install -r requirements-scale.txt"


@dataclass
class RunSummary:
    rows: int
    parts: int
    reports: list[tuple[Path, ImportReport]]


Batches = Iterator[tuple[int, int, pd.DataFrame, ImportReport | dict]]


def _ray_engine(engine: str):
    """core.inference.ray_engine for `engine` "ray" (InputError saying how to install Ray
    when it is missing), None for "local"."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; one of {', '.join(ENGINES)}")
    if engine != "ray":
        return None
    try:
        from core.inference import ray_engine
    except ImportError:
        raise InputError(INSTALL_RAY) from None
    return ray_engine


def _chunks(shards: list[Path], encoding: str, batch_size: int | None) -> Iterator[tuple[int, Path, int, pd.DataFrame]]:
    """(shard, path, first row - 1, rows) per local batch: a whole shard unless `batch_size`."""
    for k, path in enumerate(shards):
        frame = read_shard(path, encoding)
        size = batch_size or len(frame)
        for start in range(0, len(frame), size):
            yield k, path, start, frame.iloc[start:start + size]


def local_batches(shards: list[Path], job: PredictJob, model_dir: Path, *, batch_size: int | None = None,
                  progress: bool = False) -> Batches:
    """Every shard in this process; a shard is one batch unless `batch_size` is given (as
    `predict` always did: the whole file at once, with progress bars). The first batch is
    read before the model loads, so bad input fails in a second, not after TensorFlow."""
    from core.models.classifier import Classifier

    classifier = None
    for k, path, start, rows in _chunks(shards, job.encoding, batch_size):
        catalogue = read_rows(rows, path, job, progress=progress)
        classifier = classifier or Classifier.load(model_dir)
        yield k, start, score_rows(classifier, catalogue, job, progress=progress), catalogue.report


def run(shards: list[Path], job: PredictJob, model_dir: Path, out: Path, *, engine: str = "local",
        workers: int | None = None, batch_size: int | None = None, part_format: str = "parquet",
        progress: bool = False, log: Callable[[str], None] = lambda line: None) -> RunSummary:
    """Score every shard with `engine` and write `out` (a .csv file or a folder of parts)."""
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size must be 1 or more, got {batch_size}")
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be 1 or more, got {workers}")
    ray_engine = _ray_engine(engine)
    if ray_engine is not None:
        batches = ray_engine.batches(shards, job, model_dir, workers=workers, batch_size=batch_size,
                                     progress=progress, log=log)
    else:
        batches = local_batches(shards, job, model_dir, batch_size=batch_size, progress=progress)
    writer = RowWriter(out, part_format)
    reports = {k: ShardReport(str(path)) for k, path in enumerate(shards)}
    bar = None
    if progress and engine == "ray":  # the local engine's own bars already show each shard
        from tqdm import tqdm

        bar = tqdm(unit=" rows", desc="scored", dynamic_ncols=True)
    try:
        for k, start, frame, report in batches:
            if bar is not None:
                bar.update(len(frame))
            if report is not None:  # a block Ray split after its report (never seen; tolerated)
                reports[k].parts.append((start, report if isinstance(report, dict) else report_dict(report)))
            writer.write(frame)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    return RunSummary(writer.rows, writer.parts, [(shards[k], r.report()) for k, r in reports.items()])


def run_embed(shards: list[Path], job: EmbedJob, *, engine: str = "local", workers: int | None = None,
              batch_size: int | None = None, progress: bool = False,
              log: Callable[[str], None] = lambda line: None) -> dict:
    """Embed every shard's photos into the cache with `engine`; totals, and the rows whose
    photo could not be used (per shard, row numbers the shard's own)."""
    ray_engine = _ray_engine(engine)
    if ray_engine is not None:
        results = ray_engine.embed_batches(shards, job, workers=workers, batch_size=batch_size, progress=progress,
                                           log=log)
    else:
        results = _local_embed(shards, job, batch_size=batch_size, progress=progress)
    totals = {"rows": 0, "photos": 0, "embedded": 0}
    missing: list[dict] = []
    for k, start, result in results:
        for key in totals:
            totals[key] += result[key]
        missing += [{"file": shards[k].name, "row": m["row"] + start, "reason": m["reason"]} for m in result["missing"]]
    return {**totals, "missing": len(missing), "missing_rows": missing[:50], "shards": len(shards),
            "backbone": job.backbone, "engine": engine}


def _local_embed(shards: list[Path], job: EmbedJob, *, batch_size: int | None, progress: bool):
    image_model = None
    for k, path, start, rows in _chunks(shards, job.encoding, batch_size):
        image_model = image_model or image_model_for(job)
        yield k, start, embed_rows(image_model, rows, path, job, progress=progress)
