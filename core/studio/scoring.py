"""Score a product with the live model and record it: the product, its photo and the
prediction (all three probability sets, the version, who, when, how long) land in one
transaction, and the product enters the review queue. A product already known by its
content (the same description and photo) gets the new prediction instead of a twin.

Input is checked before anything is written, so bad input never leaves a half-product.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sqlite_utils

from core.common.errors import InputError
from core.common.text import MAX_TEXT_CHARS, refuse_long_text  # noqa: F401  (MAX_TEXT_CHARS: the one cap, re-exported)
from core.data.catalogue import join_text
from core.models.classifier import Classifier, Prediction
from core.studio.auth import User, require_current
from core.studio.store import Store, content_key, text_key, to_json, utc_now
from core.studio.uploads import StoredImage, record_image, store_image


@dataclass
class ScoredProduct:
    product_id: int
    prediction_id: int
    prediction: Prediction
    latency_ms: float
    image: StoredImage | None
    text: str


def margin(probs: np.ndarray) -> float:
    """Top-1 minus top-2 probability: small when the model hesitates between two classes."""
    if len(probs) < 2:
        return 1.0
    top2 = np.sort(probs)[-2:]
    return float(top2[1] - top2[0])


def clean_text(text: str | None) -> str:
    """Whitespace collapsed, case kept: the same text a catalogue row gives (`join_text`),
    so the stored product reads as typed (identity_key case-folds: a duplicate key only).
    Over the one cap (`core.common.text.MAX_TEXT_CHARS`) it is refused: a person typed it."""
    return refuse_long_text(join_text([text or ""]))


def prediction_row(product_id: int, prediction: Prediction, latency_ms: float | None, user: str | None) -> dict:
    """A `predictions` row: every probability the user was shown, and who saw it."""
    as_list = lambda p: None if p is None else [round(float(v), 6) for v in p]  # noqa: E731
    both = prediction.text is not None and prediction.image is not None
    return {
        "product_id": product_id, "model_version": prediction.model_version, "labels": to_json(list(prediction.labels)),
        "fused": to_json(as_list(prediction.fused)), "text_probs": to_json(as_list(prediction.text)),
        "image_probs": to_json(as_list(prediction.image)), "label": prediction.label,
        "confidence": round(float(prediction.confidence), 6), "margin": round(margin(prediction.fused), 6),
        "text_label": prediction.text_label, "image_label": prediction.image_label,
        "disagree": int(both and prediction.disagree), "latency_ms": None if latency_ms is None else round(latency_ms, 2),
        "user": user, "created_at": utc_now(),
        "level_confidences": to_json([None if c is None else round(c, 6) for _, c in prediction.levels()])
        if prediction.depth > 1 else None,
    }


def insert_product(db: sqlite_utils.Database, text: str, image_hash: str | None, source: str, user: str | None,
                   source_ref: str | None = None, true_label: str | None = None, split: str | None = None,
                   external_id: str | None = None) -> int:
    return db["products"].insert({
        "text": text, "image_hash": image_hash, "source": source, "source_ref": source_ref, "true_label": true_label,
        "split": split, "created_at": utc_now(), "created_by": user, "content_key": content_key(text, image_hash),
        "text_key": text_key(text), "external_id": external_id}).last_pk


def find_product(db: sqlite_utils.Database, text: str, image_hash: str | None,
                 external_id: str | None = None) -> int | None:
    """The product these are, if it is known: by the catalogue's own id when one is given,
    else by content (normalised text + photo hash). The oldest match wins."""
    if external_id:
        row = db.execute("SELECT id FROM products WHERE external_id = ? ORDER BY id LIMIT 1", [external_id]).fetchone()
    else:
        row = db.execute("SELECT id FROM products WHERE content_key = ? ORDER BY id LIMIT 1",
                         [content_key(text, image_hash)]).fetchone()
    return row[0] if row else None


def find_or_insert_product(db: sqlite_utils.Database, text: str, image_hash: str | None, source: str,
                           user: str | None, source_ref: str | None = None,
                           true_label: str | None = None) -> tuple[int, bool]:
    """(product id, True if new): a photo + description scored again attaches its new
    prediction to the product it already is, instead of adding a duplicate to the queue
    (a known product's label is left alone: only an import or a reviewer changes it)."""
    found = find_product(db, text, image_hash)
    if found is not None:
        return found, False
    # the text of an evaluation-slice product stays held out, whatever photo comes with it:
    # otherwise a reviewed re-entry would be trained on and the slice would measure nothing
    held_out = text and db.execute("SELECT 1 FROM products WHERE text_key = ? AND split = 'eval' LIMIT 1",
                                   [text_key(text)]).fetchone()
    return insert_product(db, text, image_hash, source, user, source_ref=source_ref, true_label=true_label,
                          split="eval" if held_out else None), True


@dataclass(frozen=True)
class ProductInput:
    """One product to score: a description and/or photo bytes; `what` names it in errors."""
    text: str | None = None
    image: bytes | None = None
    what: str = ""


def _checked(product: ProductInput) -> tuple[str, StoredImage | None]:
    """The cleaned text and the stored photo, or InputError naming the product."""
    prefix = f"{product.what}: " if product.what else ""
    try:
        text = clean_text(product.text)
    except InputError as exc:
        raise InputError(f"{prefix}{exc}") from None
    stored = store_image(product.image, what=f"{prefix}the image") if product.image else None
    if not text and stored is None:
        raise InputError(f"{prefix}give a description, a photo, or both")
    return text, stored


def score_products(store: Store, classifier: Classifier, user: User, products: Sequence[ProductInput], *,
                   source: str = "upload") -> list[ScoredProduct]:
    """Predict several products (the HTTP API's items) and record them in one transaction:
    every input is checked first, so one bad item leaves no product behind."""
    user = require_current(store, user, "predict")
    checked = [_checked(p) for p in products]
    if not checked:
        return []
    started = time.perf_counter()
    if len(checked) == 1:  # the decoded photo is at hand: no second read
        text, stored = checked[0]
        predictions = [classifier.predict(text=text or None, image=stored.image if stored else None)]
    else:
        batch = classifier.predict_batch([t for t, _ in checked], images=[s.image if s else None for _, s in checked])
        predictions = [batch.row(i) for i in range(len(checked))]
    latency_ms = (time.perf_counter() - started) * 1000 / len(checked)
    scored = []
    with store.transaction() as db:
        for (text, stored), prediction in zip(checked, predictions):
            image_hash = record_image(db, stored) if stored else None
            product_id, _ = find_or_insert_product(db, text, image_hash, source, user.username)
            prediction_id = db["predictions"].insert(prediction_row(product_id, prediction, latency_ms,
                                                                     user.username)).last_pk
            scored.append(ScoredProduct(product_id, prediction_id, prediction, latency_ms, stored, text))
    return scored


def score_product(store: Store, classifier: Classifier, user: User, *, text: str | None = None,
                  image: bytes | None = None, source: str = "upload") -> ScoredProduct:
    """Predict one product (description and/or photo bytes) and record it."""
    return score_products(store, classifier, user, [ProductInput(text, image)], source=source)[0]
