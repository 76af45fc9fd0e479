"""The Ray Data engine: shards are read here and handed to the cluster in blocks, rows scored
by a pool of actors that each load the bundle once (`Scorer`), results streamed back in
input order.

A local cluster is started unless one is running or RAY_ADDRESS names one; the `core`
package travels to the workers (`py_modules`), the Python packages must already be there.
Photos are read by the workers from paths or URLs (the download rules apply there too),
and the image-embedding cache is used where the worker can reach it."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import ray

from core.common.errors import InputError
from core.common.settings import REPO_ROOT, studio_environment
from core.data.shards import read_shard
from core.inference.embed import EmbedJob, embed_rows, image_model_for
from core.inference.rows import PATH, REPORT, ROW, SHARD, PredictJob, predict_rows, report_cell

MIN_BLOCK, MAX_BLOCK = 64, 4096
ACTOR_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
             "TF_CPP_MIN_LOG_LEVEL": "2"}


def connect(log: Callable[[str], None] = lambda line: None) -> None:
    """Join the running Ray (tests, a notebook), the cluster RAY_ADDRESS names, or start a
    local one; the workers get this checkout's `core` and the studio's settings."""
    if ray.is_initialized():
        return
    runtime_env = {"py_modules": [str(REPO_ROOT / "core")], "env_vars": {**studio_environment(), **ACTOR_ENV}}
    log("joining Ray (the cluster RAY_ADDRESS names, else a local one started now)")
    # Ray's C++ side logs notices as errors on stderr (e.g. about actor restarts, which are
    # what we want); failures still surface as Python exceptions
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray").setLevel(logging.ERROR)  # our own lines say what happens
    ray.init(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
             configure_logging=False)  # Ray itself reads RAY_ADDRESS


def _block_rows(rows: int, workers: int, batch_size: int | None) -> int:
    """Rows per block: --batch-size, else about four blocks per worker and shard, within
    [64, 4096] (small blocks spread the work; each block costs Ray a task's worth of
    bookkeeping: 256-row blocks made 100k titles ~30% slower, bench_ray)."""
    if batch_size:
        return batch_size
    return max(MIN_BLOCK, min(MAX_BLOCK, -(-rows // (4 * workers))))


def _blocks(shards: list[Path], encoding: str, workers: int, batch_size: int | None) -> list:
    """Every shard read here and handed to the object store in blocks, with their shard,
    path and row number. Blocks are what the actors share out: Ray gives all of one task's
    output to one actor, so shards read by tasks would keep the others idle."""
    refs = []
    for k, path in enumerate(shards):
        frame = read_shard(path, encoding)
        frame[SHARD] = k
        frame[PATH] = str(path.resolve())
        frame[ROW] = range(1, len(frame) + 1)
        size = _block_rows(len(frame), workers, batch_size)
        refs += [ray.put(frame.iloc[start:start + size].reset_index(drop=True))
                 for start in range(0, len(frame), size)]
        del frame
    return refs


class Scorer:
    """An actor: the bundle loaded once, then batch after batch (rows of one or more shards)."""

    def __init__(self, model_dir: str, job: PredictJob):
        from core.models.classifier import Classifier

        self.classifier = Classifier.load(model_dir)
        self.job = job

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for (shard, path), rows in batch.groupby([SHARD, PATH], sort=False):
            # a batch spanning shards with other columns has them as all-missing: not this shard's
            rows = rows.dropna(axis=1, how="all")
            out, report = predict_rows(self.classifier, rows, Path(path), self.job)
            out[SHARD] = int(shard)
            out[ROW] = rows[ROW].to_numpy()
            cells = [""] * len(out)
            cells[0] = report_cell(report)
            out[REPORT] = cells
            parts.append(out)
        return pd.concat(parts, ignore_index=True)


def _dataset(shards: list[Path], encoding: str, actor: type, args: tuple, *, workers: int | None,
             batch_size: int | None, progress: bool, log: Callable[[str], None]):
    """The shards in blocks, then `actor(*args)` over batches on a pool of `workers`."""
    connect(log)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    # Ray Data's own bars on a terminal; never its INFO log lines (they would bury the report)
    context.enable_progress_bars = bool(progress) and sys.stderr.isatty()
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = workers or max(1, cpus)
    log(f"{workers} Ray worker(s) on {cpus} CPU(s)")
    return (ray.data.from_pandas_refs(_blocks(shards, encoding, workers, batch_size))
            .map_batches(actor, fn_constructor_args=args, batch_size=batch_size,  # None: a block per call
                         batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                         runtime_env={"env_vars": ACTOR_ENV}))


def batches(shards: list[Path], job: PredictJob, model_dir: Path, *, workers: int | None = None,
            batch_size: int | None = None, progress: bool = False, log: Callable[[str], None] = lambda line: None,
            scorer: type = Scorer):
    """(shard, first row - 1, scored rows, report dict) per scored batch, in input order."""
    dataset = _dataset(shards, job.encoding, scorer, (str(model_dir.resolve()), job), workers=workers,
                       batch_size=batch_size, progress=progress, log=log)
    for batch in _streamed(dataset):
        for (shard, first), rows in _runs(batch):
            report = json.loads(rows[REPORT].iloc[0]) if rows[REPORT].iloc[0] else None
            yield shard, first, rows.drop(columns=[SHARD, ROW, REPORT]).reset_index(drop=True), report


class Embedder:
    """An actor: the backbone loaded once; each batch's photos embedded into the cache."""

    def __init__(self, job: EmbedJob):
        self.job = job
        self.image_model = image_model_for(job)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = []
        for (shard, path), rows in batch.groupby([SHARD, PATH], sort=False):
            rows = rows.dropna(axis=1, how="all")
            result = embed_rows(self.image_model, rows, Path(path), self.job)
            out.append({SHARD: int(shard), ROW: int(rows[ROW].iloc[0]), REPORT: json.dumps(result)})
        return pd.DataFrame(out)


def embed_batches(shards: list[Path], job: EmbedJob, *, workers: int | None = None, batch_size: int | None = None,
                  progress: bool = False, log: Callable[[str], None] = lambda line: None):
    """(shard, first row - 1, result dict) per embedded batch, in input order."""
    dataset = _dataset(shards, job.encoding, Embedder, (job,), workers=workers, batch_size=batch_size,
                       progress=progress, log=log)
    for batch in _streamed(dataset):
        for record in batch.to_dict(orient="records"):
            yield int(record[SHARD]), int(record[ROW]) - 1, json.loads(record[REPORT])


def _streamed(dataset):
    """The dataset's blocks in order; bad input found on a worker (InputError: a missing
    column, an unreadable shard) is raised here as itself, the rest as Ray raised it."""
    try:
        yield from dataset.iter_batches(batch_format="pandas", batch_size=None)
    except Exception as exc:  # noqa: BLE001 - re-raised below unless it is the user's input
        cause = _input_error(exc)
        if cause is not None:
            raise InputError(str(cause)) from None
        raise


def _input_error(exc: BaseException | None, depth: int = 0) -> InputError | None:
    while exc is not None and depth < 20:
        if isinstance(exc, InputError):
            return exc
        inner = getattr(exc, "cause", None)
        if isinstance(inner, BaseException) and inner is not exc:
            found = _input_error(inner, depth + 1)
            if found is not None:
                return found
        exc, depth = exc.__cause__ or exc.__context__, depth + 1
    return None


def _runs(batch: pd.DataFrame):
    """Split a streamed block at each batch report: ((shard, first row - 1), rows) per scored batch."""
    starts = [i for i, cell in enumerate(batch[REPORT].tolist()) if cell] + [len(batch)]
    if starts[0] != 0:
        print("warning: a block began without its report", file=sys.stderr)
        starts.insert(0, 0)
    for a, b in zip(starts, starts[1:]):
        rows = batch.iloc[a:b]
        yield (int(rows[SHARD].iloc[0]), int(rows[ROW].iloc[0]) - 1), rows
