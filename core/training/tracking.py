"""Experiment tracking for training runs: progress into the job row (epoch, step,
metric), TensorBoard event files per run, and MLflow when MLFLOW_TRACKING_URI is set.

TensorBoard logs live under <home>/data/runs/<run>/<stage>/ (`tensorboard --logdir`
that folder); the per-epoch curves are also kept in the bundle's metadata, which is
what the Models page draws.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import core.models.tf_setup  # noqa: F401, I001  (quiet TensorFlow, KERAS_HOME) before keras

# isort: split
import keras

from core.common.settings import get_settings, strip_credentials


def runs_dir() -> Path:
    return get_settings().data_dir / "runs"


class ProgressCallback(keras.callbacks.Callback):
    """Reports "epoch e/E · step s · loss … · accuracy …" at most once a second, mapped
    into [start, end] of the whole job's progress."""

    def __init__(self, report: Callable[[float, str, str], None], stage: str, start: float, end: float):
        super().__init__()
        self.report, self.stage, self.start, self.end = report, stage, start, end
        self.epochs, self.epoch, self.last = 1, 0, 0.0

    def on_train_begin(self, logs=None):
        self.epochs = max(1, int(self.params.get("epochs") or 1))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _send(self, fraction: float, logs: dict | None, step: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        metrics = " · ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k in ("loss", "accuracy"))
        where = f"epoch {self.epoch + 1}/{self.epochs}" + (f" · step {step}" if step is not None else "")
        self.report(self.start + (self.end - self.start) * fraction, self.stage,
                    f"{self.stage}: {where}" + (f" · {metrics}" if metrics else ""))

    def on_train_batch_end(self, batch, logs=None):
        steps = max(1, int(self.params.get("steps") or 1))
        self._send((self.epoch + (batch + 1) / steps) / self.epochs, logs, step=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._send((epoch + 1) / self.epochs, logs, force=True)


class EpochLog(ProgressCallback):
    """ProgressCallback's line, once per finished epoch, to `log` (the CLI's stderr). Keras'
    own progress bar (fit's verbose=1) writes to stdout, where the CLI prints its JSON result."""

    def __init__(self, log: Callable[[str], None], stage: str):
        super().__init__(lambda _fraction, _stage, message: log(message), stage, 0.0, 1.0)

    def on_train_batch_end(self, batch, logs=None):
        pass


def tensorboard(run: str, stage: str) -> keras.callbacks.Callback:
    return keras.callbacks.TensorBoard(str(runs_dir() / run / stage.replace(" ", "_")), write_graph=False,
                                       update_freq="epoch", profile_batch=0)


def log_to_mlflow(run_name: str, params: dict, metrics: dict, bundle: Path) -> str | None:
    """Parameters, flat validation metrics and the bundle as an artifact, when
    MLFLOW_TRACKING_URI is set; returns a note for the job (None when not asked)."""
    uri = get_settings().mlflow_tracking_uri
    if not uri:
        return None
    try:
        import mlflow
    except ImportError:
        return "MLFLOW_TRACKING_URI is set but mlflow is not installed (pip install mlflow-skinny): not logged"
    if not uri.startswith(("http://", "https://", "databricks", "sqlite", "postgresql", "mysql")):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # a local folder: mlflow-skinny's file store
    try:
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_name=run_name):
            mlflow.log_params({k: v for k, v in params.items() if v is not None})
            for part, values in (metrics.get("validation") or {}).items():
                for name in ("accuracy", "macro_f1"):
                    if isinstance(values, dict) and values.get(name) is not None:
                        mlflow.log_metric(f"{part}_{name}", float(values[name]))
            mlflow.log_artifacts(str(bundle), artifact_path="bundle")
    except Exception as exc:  # noqa: BLE001 - the model is trained and saved; tracking is a side note
        # the note lands in the job row: never with the URI's user:password (nor an error quoting it)
        return strip_credentials(f"not logged to MLflow at {uri}: {type(exc).__name__}: "
                                 f"{strip_credentials(' '.join(str(exc).split()))[:300]}")
    return strip_credentials(f"logged to MLflow at {uri}")
