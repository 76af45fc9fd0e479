"""POST /v1/explain: word values, the heatmap as a PNG and the modality share; for a
typed product or a stored one; a 4xx for what cannot be explained."""

from __future__ import annotations

import base64
import io

from helpers.api import error_of
from helpers.apptest import png_bytes
from PIL import Image


def test_explain_a_typed_product_then_a_stored_one(api):
    photo = base64.b64encode(png_bytes("Watches")).decode()
    r = api.post("/v1/explain", "victor", json={"text": "Acme watch dial strap", "image_base64": photo})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["label"] == out["prediction"]["label"]
    words = [t["token"] for t in out["text_shap"]["tokens"]]
    assert "watch" in " ".join(words).lower()
    heat = Image.open(io.BytesIO(base64.b64decode(out["gradcam_png_base64"])))
    assert heat.format == "PNG" and heat.size == (64, 48)
    share = out["modality_share"]
    assert {"text", "image"} <= set(share)

    explained = api.post("/v1/explain", "victor", json={"text": "Acme watch dial strap", "label": "Toys"}).json()
    assert explained["label"] == "Toys" and explained["gradcam_png_base64"] is None

    stored = api.post("/v1/predict", "victor", json={"items": [{"text": "Zenith skillet ladle",
                                                                "image_base64": photo}]}).json()
    pid = stored["predictions"][0]["product_id"]
    r = api.post("/v1/explain", "victor", json={"product_id": pid})
    assert r.status_code == 200 and r.json()["gradcam_png_base64"] and r.json()["text_shap"]


def test_explain_refuses_what_it_cannot_explain(api):
    cases = [
        ({}, 400, "nothing to explain"),
        ({"text": "Acme watch", "label": "Spaceships"}, 400, "not a category"),
        ({"product_id": 424242}, 404, "no product"),
        ({"product_id": 1, "text": "Acme"}, 400, "not both"),
        ({"image_base64": base64.b64encode(b"GIF89a...").decode()}, 400, "image"),
        ({"text": "a", "extra": True}, 422, "extra"),
    ]
    for body, status, words in cases:
        r = api.post("/v1/explain", "victor", json=body)
        assert r.status_code == status and words in error_of(r)["message"].lower(), (body, r.text)
