"""Catalogue ingest and retraining as jobs: import, import again (nothing doubles), a
broken catalogue fails its job with a message, then a retrain registers a new version."""

from __future__ import annotations

import time

from helpers.api import error_of
from helpers.app_home import FAST_TRAINING
from helpers.apptest import catalogue_upload

MAPPING = {"text_cols": "title,description", "label_col": "category", "image_col": "image"}


def wait_for(api, job_id: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def upload(api, csv_bytes: bytes, zip_bytes: bytes | None, who: str = "admin", **fields):
    files = {"csv": ("shop.csv", csv_bytes, "text/csv")}
    if zip_bytes is not None:
        files["images"] = ("photos.zip", zip_bytes, "application/zip")
    return api.post("/v1/catalogues", who, data={**MAPPING, **fields}, files=files)


def test_import_twice_then_retrain(api, tmp_path, monkeypatch):
    from core.studio.store import Store

    monkeypatch.setenv("STUDIO_TRAIN_OPTIONS", FAST_TRAINING)
    csv_bytes, zip_bytes, usable = catalogue_upload(tmp_path)
    r = upload(api, csv_bytes, zip_bytes, name="spring")
    assert r.status_code == 202, r.text
    started = r.json()
    assert started["url"] == f"/v1/jobs/{started['job']['id']}" and started["job"]["kind"] == "import"
    job = wait_for(api, started["job"]["id"])
    assert job["state"] == "done", job
    assert job["result"]["added"] == usable and job["result"]["unusable"] == 1 and job["progress"] == 1.0
    store = Store()
    products = store.one("SELECT count(*) AS n, count(image_hash) AS photos FROM products "
                         "WHERE source = 'catalogue:spring'")
    assert products["n"] == usable and products["photos"] == usable

    again = wait_for(api, upload(api, csv_bytes, zip_bytes, name="spring").json()["job"]["id"])
    assert again["state"] == "done" and again["result"]["added"] == 0 and again["result"]["unchanged"] == usable
    assert store.one("SELECT count(*) AS n FROM products")["n"] == usable

    assert api.post("/v1/train", "rita", json={}).status_code == 403
    r = api.post("/v1/train", "admin", json={"options": {"folds": 2}})
    assert r.status_code == 202, r.text
    busy = api.post("/v1/train", "admin", json={})
    assert busy.status_code == 409 and "still running" in error_of(busy)["message"]
    job = wait_for(api, r.json()["job"]["id"], timeout=600)
    assert job["state"] == "done", job
    versions = api.get("/v1/models", "victor").json()["models"]
    assert len(versions) == 2 and sum(m["live"] for m in versions) == 1
    new = next(m for m in versions if not m["live"])
    assert new["created_by"] == "admin"


def test_bad_catalogues_are_refused_or_fail_their_job(api, tmp_path):
    from core.studio.store import Store

    csv_bytes, zip_bytes, _ = catalogue_upload(tmp_path)
    r = upload(api, csv_bytes, zip_bytes, who="rita")
    assert r.status_code == 403
    r = upload(api, b"", None)
    assert r.status_code == 400 and "empty" in error_of(r)["message"].lower()
    r = upload(api, csv_bytes, b"PK not really a zip")
    assert r.status_code == 400, r.text
    r = upload(api, csv_bytes, zip_bytes, encoding="klingon-8")
    assert r.status_code == 400 and "encoding" in error_of(r)["message"]
    r = api.post("/v1/catalogues", "admin", data={"label_col": "category"},
                 files={"csv": ("shop.csv", csv_bytes, "text/csv")})
    assert r.status_code == 422 and "text_cols" in error_of(r)["message"]
    # a mapping that names no such column: the job fails and says why
    job = wait_for(api, upload(api, csv_bytes, zip_bytes, label_col="aisle").json()["job"]["id"])
    assert job["state"] == "failed" and "aisle" in job["error"], job
    assert "traceback" not in str(job["result"]).lower()
    assert Store().one("SELECT count(*) AS n FROM products")["n"] == 0
    assert api.get("/v1/jobs/424242").status_code == 404
    assert api.get("/v1/jobs/0").status_code == 422
    assert api.get(f"/v1/jobs/{2**64}").status_code == 422  # found by schemathesis: was an overflow (500)
    assert api.get("/v1/jobs/abc").status_code == 422
