"""Candidate vs live on the same held-out data, before anyone promotes.

The comparison set is the evaluation slice frozen at import (never trained on) plus the
products reviewers decided after both models' training data was taken (so neither
model saw them). A candidate whose macro-F1 is worse than the live model's by more than
the tolerance is flagged, and promoting it needs an explicit confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.common.errors import InputError
from core.models.bundle import BundleMetadata
from core.studio.auth import User, require_current
from core.studio.labels import as_catalogue, labelled_products
from core.studio.registry import activate, get_model
from core.studio.store import Store
from core.training.metrics import classification_metrics, top_confusions  # noqa: F401  (top_confusions: for the Models page)

DEFAULT_TOLERANCE = 0.01  # macro-F1


def comparison_frame(store: Store, *metadatas: BundleMetadata | None) -> pd.DataFrame:
    """Evaluation slice + products reviewed after every given model's training cut-off."""
    frame = labelled_products(store)
    trained_from = [m.trained_from if m is not None else None for m in metadatas]
    cutoff = max([(t or {}).get("last_review_id") or 0 for t in trained_from] or [0])
    if any(t is None for t in trained_from):
        cutoff = None  # a model trained outside the store: only the frozen slice is safe
    last_review = pd.DataFrame(store.query("SELECT product_id AS id, id AS review_id FROM settled"),
                               columns=["id", "review_id"])
    frame = frame.merge(last_review, on="id", how="left")
    fresh = frame["review_id"].notna() & (frame["review_id"] > cutoff) if cutoff is not None else False
    return frame[(frame["split"] == "eval") | fresh].reset_index(drop=True)


@dataclass
class Comparison:
    live_version: str
    candidate_version: str
    rows: int
    live: dict          # classification_metrics of the fused predictions
    candidate: dict
    tolerance: float

    @property
    def delta_macro_f1(self) -> float | None:
        if self.live["macro_f1"] is None or self.candidate["macro_f1"] is None:
            return None
        return round(self.candidate["macro_f1"] - self.live["macro_f1"], 6)

    @property
    def worse(self) -> bool:
        delta = self.delta_macro_f1
        return delta is not None and delta < -self.tolerance

    def per_class(self) -> pd.DataFrame:
        classes = sorted(set(self.live["per_class_f1"]) | set(self.candidate["per_class_f1"]))
        out = pd.DataFrame({"class": classes,
                            "live": [self.live["per_class_f1"].get(c, np.nan) for c in classes],
                            "candidate": [self.candidate["per_class_f1"].get(c, np.nan) for c in classes]})
        out["delta"] = (out["candidate"] - out["live"]).round(6)
        return out


def _metrics(classifier, frame: pd.DataFrame) -> dict:
    catalogue = as_catalogue(frame, "comparison set")
    result = classifier.predict_batch(catalogue.texts, catalogue.image_paths)
    usable = result.has_text | result.has_image
    predicted = [classifier.labels[int(np.argmax(p))] if ok else "(none)" for p, ok in zip(result.fused, usable)]
    return classification_metrics(catalogue.labels, predicted, sorted(set(classifier.labels) | set(catalogue.labels)))


def compare(store: Store, live_classifier, candidate_classifier, *, tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Both models on the same comparison set."""
    frame = comparison_frame(store, live_classifier.metadata, candidate_classifier.metadata)
    if frame.empty:
        raise InputError("no held-out products to compare on: import a labelled catalogue (its evaluation "
                         "slice is frozen at import) or review some products")
    return Comparison(live_classifier.version, candidate_classifier.version, len(frame),
                      _metrics(live_classifier, frame), _metrics(candidate_classifier, frame), tolerance)


def promote(store: Store, user: User, version: str, *, comparison: Comparison | None = None,
            confirm_worse: bool = False) -> None:
    """Make `version` live. A candidate flagged worse than the live model needs
    `confirm_worse` (the flag is judged on `comparison` when given). A comparison is only
    evidence against the model it was made with: if another version went live since (an
    admin in another session), the switch is refused inside its own transaction."""
    user = require_current(store, user, "models")
    if get_model(store, version) is None:
        raise InputError(f"no model version '{version}'")
    if comparison is not None and comparison.candidate_version == version and comparison.worse and not confirm_worse:
        raise InputError(f"{version} is worse than the live model {comparison.live_version} by "
                         f"{-comparison.delta_macro_f1:.3f} macro-F1 (tolerance {comparison.tolerance:.3f}); "
                         "confirm to promote it anyway")
    detail = {"delta_macro_f1": comparison.delta_macro_f1 if comparison else None,
              "confirmed_worse": bool(comparison and comparison.worse)}
    if comparison is None:
        activate(store, user, version, promotion=detail)
    else:
        activate(store, user, version, expected_live=comparison.live_version, promotion=detail)
