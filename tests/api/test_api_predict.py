"""POST /v1/predict: items are scored, stored (source api) and queued; bad input is a 4xx."""

from __future__ import annotations

import base64

from helpers.api import error_of
from helpers.apptest import png_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_predict_stores_each_item_and_queues_it(api):
    from core.studio.store import Store

    body = {"items": [{"id": "sku-1", "text": "Acme watch dial strap steel"},
                      {"id": 2, "text": "Zenith skillet ladle kettle", "image_base64": b64(png_bytes("Kitchen"))},
                      {"image_base64": b64(png_bytes("Toys"))}], "top_k": 2}
    r = api.post("/v1/predict", "victor", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [p["id"] for p in out["predictions"]] == ["sku-1", 2, None]
    first = out["predictions"][0]
    assert first["label"] == "Watches" and len(first["top"]) == 2 and first["top"][0]["label"] == "Watches"
    assert first["image_label"] is None and first["text_label"] == "Watches"
    assert out["predictions"][1]["image_label"] is not None
    store = Store()
    rows = store.query("SELECT p.id, p.source, p.created_by, q.model_version FROM products p "
                       "JOIN predictions q ON q.product_id = p.id ORDER BY p.id")
    assert [r["id"] for r in rows] == [p["product_id"] for p in out["predictions"]]
    assert {r["source"] for r in rows} == {"api"} and {r["created_by"] for r in rows} == {"victor"}
    assert {r["model_version"] for r in rows} == {out["model_version"]}

    # the same product again: a new prediction for the product it already is, not a twin
    again = api.post("/v1/predict", "victor", json={"items": [body["items"][0]]}).json()["predictions"][0]
    assert again["product_id"] == first["product_id"] and again["prediction_id"] != first["prediction_id"]

    # and a reviewer finds them in the queue
    item = api.get("/v1/review/next", "rita").json()
    assert item["product_id"] in {p["product_id"] for p in out["predictions"]}

    # one product as a multipart form: text + photo file
    r = api.post("/v1/predict", "victor", data={"text": "Acme watch bezel", "id": "form-1", "top_k": "1"},
                 files={"image": ("w.png", png_bytes("Watches"), "image/png")})
    assert r.status_code == 200, r.text
    form = r.json()["predictions"][0]
    assert form["id"] == "form-1" and len(form["top"]) == 1 and form["image_label"] is not None


def test_predict_refuses_bad_input_and_stores_nothing(api, monkeypatch):
    from core.studio.store import Store

    def products() -> int:
        return Store().one("SELECT count(*) AS n FROM products")["n"]

    good = {"text": "Acme watch dial strap"}
    cases = [
        ({"items": [good, {"text": "x", "image_base64": b64(b"not an image at all")}]}, 400, "not an image"),
        ({"items": [{"image_base64": "%%% not base64 %%%"}]}, 400, "base64"),
        ({"items": [{"image_base64": b64(png_bytes("Toys")[:60])}]}, 400, "corrupt"),
        ({"items": [good] * 257}, 422, "items"),
        ({"items": []}, 422, "items"),
        ({"items": [{"text": "w" * 60_000}]}, 422, "text"),
        ({"items": [good], "top_k": 0}, 422, "top_k"),
        ({"items": [{"text": "a", "colour": "red"}]}, 422, "colour"),
        ({"items": [{"id": "nothing"}]}, 400, "give a description"),
        ({"items": [{"text": "a", "image_base64": "aGk=", "image_url": "http://example.com/a.png"}]}, 422, "not both"),
        ({"items": [{"image_url": "http://127.0.0.1:1/photo.png"}]}, 400, "127.0.0.1"),
        ({"items": [{"image_url": "file:///etc/passwd"}]}, 400, "scheme"),
        ({"items": "all of them"}, 422, "items"),
    ]
    for body, status, words in cases:
        r = api.post("/v1/predict", "victor", json=body)
        assert r.status_code == status, (body if len(str(body)) < 200 else str(body)[:200], r.text)
        assert words.lower() in error_of(r)["message"].lower(), r.text
    r = api.post("/v1/predict", "victor", content=b'{"items": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and error_of(r)["code"] == "malformed_json"
    r = api.post("/v1/predict", "victor", content=b"text=hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = api.post("/v1/predict", "victor", content=b"x" * (65 * 1024**2), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
    r = api.post("/v1/predict", "victor", files={"image": ("x.png", b"GIF89a broken", "image/png")})
    assert r.status_code == 400, r.text
    assert products() == 0  # nothing half-written by any of them


def test_a_batch_gives_each_item_what_it_gets_alone(api):
    """Batches predict decoded photos in one pass; one item goes through Classifier.predict:
    both paths give the same probabilities."""
    items = [{"text": "Acme watch dial", "image_base64": b64(png_bytes("Watches", seed=s))} for s in (4, 5)]
    items.append({"image_base64": b64(png_bytes("Kitchen", seed=6))})
    together = api.post("/v1/predict", "victor", json={"items": items, "top_k": 3}).json()["predictions"]
    for item, batched in zip(items, together):
        alone = api.post("/v1/predict", "victor", json={"items": [item], "top_k": 3}).json()["predictions"][0]
        assert alone["product_id"] == batched["product_id"]
        for a, b in zip(alone["top"], batched["top"]):
            assert a["label"] == b["label"] and abs(a["probability"] - b["probability"]) < 1e-5
