"""The real thing: `python -m core api` as its own process on a free loopback port, driven
with a real HTTP client, set up with the command line (`users token`, `models add`), and
giving the same labels as `python -m core predict` for the same products."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from helpers.browser import free_port
from helpers.cli import run_cli

REPO = Path(__file__).resolve().parents[2]


def copy_bundle(source: Path, target: Path, version: str) -> Path:
    """The bundle saved again as another version (as `train --out` elsewhere would)."""
    from core.models.bundle import write_manifest

    shutil.copytree(source, target)
    meta = json.loads((target / "metadata.json").read_text())
    meta["version"] = version
    (target / "metadata.json").write_text(json.dumps(meta))
    write_manifest(target)
    return target


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            r = httpx.get(f"{url}/v2/health/ready", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the API was not ready in {timeout:.0f} s: {log.read_text()[-2000:]}")


@pytest.fixture
def server(app_home, tmp_path):
    """`python -m core api` over the app home; yields (url, process); killed by pid after."""
    port = free_port()
    log = tmp_path / "api.log"
    env = {**os.environ, "STUDIO_HOME": str(app_home.home)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "core", "api", "--port", str(port)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, proc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_real_api_process_set_up_from_the_shell(app_home, server, tmp_path):
    url, proc, log = server
    home = app_home.home
    made = run_cli(home, "users", "token", "victor", "--label", "PIM nightly")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("cst_") and "shown once" in made.stderr

    other = copy_bundle(app_home.bundle, tmp_path / "trained-elsewhere", "v-elsewhere-1")
    added = run_cli(home, "models", "add", other, "--activate")
    assert added.returncode == 0, added.stderr
    assert "v-elsewhere-1" in added.stdout and "live" in added.stdout

    ready = wait_ready(url, proc, log)
    assert ready == {"ready": True, "model_version": "v-elsewhere-1"}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/predict", "/v1/auth/token", "/v2/models/catalog/infer", "/v1/review/next"} <= set(paths)
        models = client.get("/v1/models").json()["models"]
        assert {m["version"]: m["live"] for m in models}["v-elsewhere-1"] is True

        rows = list(csv.DictReader(app_home.catalogue_csv.open()))[:12]
        images = app_home.catalogue_csv.parent / "images"
        items = [{"id": str(i), "text": f"{r['title']} {r['description']}",
                  "image_base64": base64.b64encode((images / r["image"]).read_bytes()).decode()}
                 for i, r in enumerate(rows)]
        r = client.post("/v1/predict", json={"items": items})
        assert r.status_code == 200, r.text
        api_labels = [p["label"] for p in r.json()["predictions"]]
        assert client.post("/v1/predict", json={"items": items[:1] * 300}).status_code == 422
        r = client.post("/v1/predict", content=b"{", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"

    subset = tmp_path / "subset.csv"
    with subset.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "cli.csv"
    predicted = run_cli(home, "predict", "--model", other, "--data", subset, "--text-cols", "title,description",
                        "--image-col", "image", "--image-dir", images, "--out", out, "--quiet")
    assert predicted.returncode == 0, predicted.stderr
    cli_labels = [r["predicted_label"] for r in csv.DictReader(out.open())]
    assert api_labels == cli_labels

    # one line and exit 2 for a busy port, a folder that is no bundle, a user who is nobody
    busy = run_cli(home, "api", "--port", url.rsplit(":", 1)[1])
    assert busy.returncode == 2 and "in use" in busy.stderr
    assert run_cli(home, "models", "add", tmp_path).returncode == 2
    nobody = run_cli(home, "users", "token", "nobody")
    assert nobody.returncode == 2 and "no user" in nobody.stderr

    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) is not None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/v2/health/live", timeout=2)
