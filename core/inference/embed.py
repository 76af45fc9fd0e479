"""`python -m core embed`: the backbone run once over a whole catalogue's photos (and their
mirror images, which training also uses), into the image-embedding cache, so a retrain
spends its time on the heads. The per-batch function both engines call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.data.catalogue import image_column
from core.inference.rows import HIDDEN


@dataclass(frozen=True)
class EmbedJob:
    image_col: str
    image_dir: str | None = None
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    encoding: str = "utf-8"


def image_model_for(job: EmbedJob):
    from core.models.image_model import ImageModel

    return ImageModel(job.backbone, weights="imagenet" if job.pretrained else None)


def embed_rows(image_model, frame: pd.DataFrame, source: Path, job: EmbedJob, *,
               progress: bool = False) -> dict:
    """Embed the batch's photos (plain and mirrored) into the cache; counts and the rows
    (1-based in the batch) whose photo could not be used, with why."""
    data = frame.drop(columns=[c for c in HIDDEN if c in frame.columns])
    paths, missing = image_column(data, source, job.image_col, job.image_dir, progress=progress)
    _, present = image_model.embed(paths, progress=progress)
    image_model.embed(paths, flip=True, progress=progress)
    return {"rows": len(data), "photos": sum(p is not None for p in paths), "embedded": int(present.sum()),
            "missing": [{"row": m["row"], "reason": m["reason"]} for m in missing]}
