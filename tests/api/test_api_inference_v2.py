"""The Open Inference Protocol (KServe V2) in its JSON tensor form."""

from __future__ import annotations

import base64

import numpy as np
from helpers.api import error_of
from helpers.apptest import png_bytes


def test_metadata_ready_and_infer_agree_with_v1(api):
    meta = api.get("/v2/models/catalog", "victor").json()
    assert meta["name"] == "catalog" and [i["name"] for i in meta["inputs"]] == ["text", "image"]
    classes = meta["parameters"]["classes"]
    assert meta["outputs"][1] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]}
    assert api.get("/v2/models/catalog/ready", "victor").json() == {"name": "catalog", "ready": True}

    photo = base64.b64encode(png_bytes("Kitchen")).decode()
    body = {"id": "req-7", "inputs": [
        {"name": "text", "shape": [3], "datatype": "BYTES", "data": ["Acme watch dial strap", "", "Bolt puzzle doll"]},
        {"name": "image", "shape": [3, 1], "datatype": "BYTES", "data": [[""], [photo], [""]]}]}
    r = api.post("/v2/models/catalog/infer", "victor", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "catalog" and out["id"] == "req-7"
    outputs = {o["name"]: o for o in out["outputs"]}
    probs = np.asarray(outputs["probabilities"]["data"], dtype=float).reshape(outputs["probabilities"]["shape"])
    assert probs.shape == (3, len(classes)) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    labels = outputs["label"]["data"]
    assert labels == [classes[i] for i in probs.argmax(axis=1)]
    v1 = api.post("/v1/predict", "victor", json={"items": [{"text": "Acme watch dial strap"}]}).json()
    assert v1["predictions"][0]["label"] == labels[0]
    assert v1["predictions"][0]["product_id"] == out["parameters"]["product_ids"][0]

    version = meta["parameters"]["version"]
    r = api.post(f"/v2/models/catalog/versions/{version}/infer", "victor",
                 json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Zenith skillet"]}],
                       "outputs": [{"name": "label"}]})
    assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["label"]
    assert api.get(f"/v2/models/catalog/versions/{version}/ready", "victor").json()["ready"] is True
    assert api.get("/v2/models/catalog/versions/v-nope", "victor").status_code == 404


def test_infer_refuses_malformed_tensors(api):
    text = lambda **kw: {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Acme watch"], **kw}  # noqa: E731
    cases = [
        ({"inputs": [text(name="colour")]}, 400, "unknown input"),
        ({"inputs": [text(datatype="FP32")]}, 400, "bytes"),
        ({"inputs": [text(shape=[2])]}, 400, "shape"),
        ({"inputs": [text(data=[1])]}, 400, "string"),
        ({"inputs": [text(), text()]}, 400, "twice"),
        ({"inputs": [text(), {"name": "image", "shape": [2], "datatype": "BYTES", "data": ["", ""]}]}, 400,
         "same number"),
        ({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["bm90IGFuIGltYWdl"]}]}, 400,
         "not an image"),
        ({"inputs": [text()], "outputs": [{"name": "logits"}]}, 400, "unknown output"),
        ({"inputs": []}, 422, "inputs"),
        ({"inputs": [text(shape=[-1])]}, 400, "-1"),
    ]
    for body, status, words in cases:
        r = api.post("/v2/models/catalog/infer", "victor", json=body)
        assert r.status_code == status and words in error_of(r)["message"].lower(), (body, r.text)
    from core.studio.store import Store

    assert Store().one("SELECT count(*) AS n FROM products")["n"] == 0
