"""One batch of catalogue rows in, the `predict` command's output rows out: the function
both engines call, so their outputs cannot drift apart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.catalogue import Catalogue, ImportReport, catalogue_from_frame
from core.models.classifier import BatchPrediction, Classifier

# Columns an engine adds to a batch and removes before writing: which shard and row
# (1-based in the shard) each row is, and each batch's import report (on its first row).
SHARD, ROW, PATH, REPORT = "__shard", "__row", "__path", "__report"
HIDDEN = (SHARD, ROW, PATH, REPORT)


@dataclass(frozen=True)
class PredictJob:
    """What to read from each row and what to write (the `predict` command's flags)."""
    text_cols: list[str]
    image_col: str | None = None
    image_dir: str | None = None
    min_confidence: float | None = None
    probabilities: bool = False
    encoding: str = "utf-8"


def prediction_frame(frame: pd.DataFrame, result: BatchPrediction, min_confidence: float | None,
                     probabilities: bool) -> pd.DataFrame:
    """The input rows with predicted_label, confidence, text_label, image_label (a tree:
    predicted_path, each level and its confidence; `probabilities`: p:<class> per class)."""
    frame = frame.copy()
    usable = result.has_text | result.has_image
    rows = [result.row(i) for i in range(len(frame))]
    frame["predicted_label"] = [r.leaf if r.fused is not None else "" for r in rows]
    frame["confidence"] = [f"{r.confidence:.6f}" if r.fused is not None else "" for r in rows]
    frame["text_label"] = [r.leaf_of("text") or "" for r in rows]
    frame["image_label"] = [r.leaf_of("image") or "" for r in rows]
    tree = result.tree
    if tree is not None and not tree.is_flat:
        frame["predicted_path"] = [(r.path_at(min_confidence or 0.0) or "") if r.fused is not None else ""
                                   for r in rows]
        levels = [r.levels() if r.fused is not None else [] for r in rows]
        for k in range(tree.depth):
            frame[f"predicted_level_{k + 1}"] = [lv[k][0] if lv else "" for lv in levels]
            frame[f"confidence_level_{k + 1}"] = [f"{lv[k][1]:.6f}" if lv and lv[k][1] is not None else ""
                                                  for lv in levels]
    if probabilities:
        columns = {f"p:{label}": [f"{p[j]:.6f}" if m else "" for p, m in zip(result.fused, usable)]
                   for j, label in enumerate(result.labels)}
        frame = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1)
    return frame


def read_rows(frame: pd.DataFrame, source: Path, job: PredictJob, *, progress: bool = False) -> Catalogue:
    """The model's inputs of `frame` (rows of the shard `source`, every value text) and what
    reading them found (missing photos, empty texts, rows with neither)."""
    data = frame.drop(columns=[c for c in HIDDEN if c in frame.columns])
    return catalogue_from_frame(data, source, text_cols=job.text_cols, image_col=job.image_col,
                                image_dir=job.image_dir, progress=progress)


def score_rows(classifier: Classifier, catalogue: Catalogue, job: PredictJob, *,
               progress: bool = False) -> pd.DataFrame:
    """The output rows of a read batch."""
    result = classifier.predict_batch(catalogue.texts, catalogue.image_paths, progress=progress)
    return prediction_frame(catalogue.frame, result, job.min_confidence, job.probabilities)


def predict_rows(classifier: Classifier, frame: pd.DataFrame, source: Path, job: PredictJob, *,
                 progress: bool = False) -> tuple[pd.DataFrame, ImportReport]:
    """`read_rows` then `score_rows`: the output rows and the batch's report."""
    catalogue = read_rows(frame, source, job, progress=progress)
    return score_rows(classifier, catalogue, job, progress=progress), catalogue.report


@dataclass
class ShardReport:
    """The reports of one shard's batches, row numbers made the shard's own."""
    source: str
    parts: list[tuple[int, dict]] = field(default_factory=list)  # (first row - 1, report dict)

    def report(self) -> ImportReport:
        if len(self.parts) == 1 and self.parts[0][0] == 0:
            return ImportReport(**_fields(self.parts[0][1]))
        merged: dict[str, Any] = {"source": self.source, "rows": 0, "missing_images": [], "empty_texts": 0,
                                  "empty_text_rows": [], "duplicate_texts": 0, "unusable_rows": [],
                                  "no_image_rows": [], "cut_text_rows": [], "notes": []}
        for offset, part in sorted(self.parts, key=lambda p: p[0]):
            merged["rows"] += part["rows"]
            merged["empty_texts"] += part["empty_texts"]
            merged["duplicate_texts"] += part["duplicate_texts"]  # within each batch (the engine's blocks)
            merged["missing_images"] += [{**m, "row": m["row"] + offset} for m in part["missing_images"]]
            for key in ("empty_text_rows", "unusable_rows", "no_image_rows", "cut_text_rows"):
                merged[key] += [r + offset for r in part[key]]
            merged["notes"] += [n for n in part["notes"] if n not in merged["notes"]]
            for key in ("text_columns", "image_column"):
                merged[key] = part[key]
        return ImportReport(**merged)


def _fields(data: dict) -> dict:
    known = ImportReport.__dataclass_fields__
    return {k: v for k, v in data.items() if k in known}


def report_dict(report: ImportReport) -> dict:
    """A batch's report as ShardReport keeps it (plain data)."""
    return _fields(report.to_dict())


def report_cell(report: ImportReport) -> str:
    """A batch's report as one JSON cell (it travels with the rows through Ray)."""
    return json.dumps(report_dict(report))
