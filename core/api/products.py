"""From request items to `core.studio.scoring` and back: photos decoded from base64 or
fetched by URL (the download rules: public addresses only, bounded size and time), and
a scored product as the API shows it."""

from __future__ import annotations

import base64
import binascii
from typing import Sequence

from core.api.schemas import LabelProbability, LevelOut, PredictionOut, ProductIn
from core.common.errors import InputError
from core.data.downloads import download_url
from core.studio.scoring import ProductInput, ScoredProduct


def image_bytes(item: ProductIn, what: str) -> bytes | None:
    """The photo's bytes, or None; InputError naming the item for bad base64 or a URL
    that cannot be fetched."""
    if item.image_base64 is not None:
        data = item.image_base64.strip()
        if data.startswith("data:") and "," in data:  # a data URL pasted as is
            data = data.split(",", 1)[1]
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{what}: image_base64 is not valid base64") from None
        if not raw:
            raise InputError(f"{what}: image_base64 is empty")
        return raw
    if item.image_url is not None:
        try:
            return download_url(item.image_url).read_bytes()
        except InputError as exc:
            raise InputError(f"{what}: {exc}") from None
    return None


def product_input(item: ProductIn, what: str) -> ProductInput:
    return ProductInput(item.text, image_bytes(item, what), what)


def item_name(item_id, index: int) -> str:
    return f"item {index + 1}" + (f" (id {item_id!r})" if item_id is not None else "")


def prediction_out(item_id, scored: ScoredProduct, top_k: int) -> PredictionOut:
    p = scored.prediction
    tree = p.depth > 1
    return PredictionOut(
        id=item_id, product_id=scored.product_id, prediction_id=scored.prediction_id, label=p.leaf,
        confidence=round(float(p.confidence), 6),
        top=[LabelProbability(label=label, probability=round(prob, 6)) for label, prob in p.top(top_k)],
        text_label=p.leaf_of("text"), image_label=p.leaf_of("image"), path=p.label if tree else None,
        levels=[LevelOut(name=name, confidence=None if c is None else round(c, 6)) for name, c in p.levels()]
        if tree else None, disagree=bool(p.disagree))


def inputs(items: Sequence[ProductIn], ids: Sequence) -> list[ProductInput]:
    return [product_input(item, item_name(i, n)) for n, (item, i) in enumerate(zip(items, ids))]
