"""The README's run command, `python -m core serve`: a first admin, the demo model trained once and
its catalogue imported, then the app; and `python -m core demo` without data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.catalogues import write_catalogue

from core.common.category_path import normalise_path

REPO = Path(__file__).resolve().parents[2]


def _flipkart_shaped(root: Path) -> Path:
    """A small catalogue with the demo's column names (Flipkart's)."""
    cat = write_catalogue(root, n_per_class=8, label_format="tree", seed=3)
    frame = pd.read_csv(cat.csv_path, dtype=str, keep_default_na=False)
    frame = frame.rename(columns={"title": "product_name", "category": "product_category_tree"})
    frame.to_csv(root / "products.csv", index=False)
    return root


def _demo(home: Path, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_DEMO_DATA": str(data)}
    return subprocess.run([sys.executable, "-m", "core", "demo"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def test_demo_without_data_says_where_to_point_it(tmp_path):
    proc = _demo(tmp_path / "home", tmp_path / "nowhere")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no demo catalogue at")
    assert "STUDIO_DEMO_DATA" in lines[0] and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- serve (the README run command)


def _serve(home: Path, data: Path, *extra: str, env_extra: dict | None = None, timeout: float = 600):
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_DEMO_DATA": str(data), **(env_extra or {})}
    for var in ("STUDIO_ADMIN_USER", "STUDIO_ADMIN_PASSWORD"):
        if var not in (env_extra or {}):
            env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "core", "serve", *extra], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow  # 22 s: a whole demo training in a subprocess (the screenshots walk runs it too)
def test_first_run_creates_a_one_time_admin_trains_and_imports_the_demo(tmp_path):
    from core.studio.auth import authenticate
    from core.studio.registry import live_model
    from core.studio.store import Store

    data = _flipkart_shaped(tmp_path / "demo")
    home = tmp_path / "home"
    first = _serve(home, data, "--prepare-only")
    assert first.returncode == 0, first.stderr[-2000:]
    password = first.stdout.split("one-time password: ")[1].split()[0]
    store = Store(home / "data" / "studio.db")
    admin = authenticate(store, "admin", password)
    assert admin is not None and admin.role == "admin" and admin.must_change_password
    live = live_model(store)
    assert live is not None and Path(live.path) == (home / "models" / "demo").resolve()
    imported = store.one("SELECT COUNT(*) AS n, COUNT(DISTINCT true_label) AS k FROM products "
                         "WHERE source = 'catalogue:demo'")
    paths = {normalise_path(v, 3) for v in pd.read_csv(data / "products.csv")["product_category_tree"]}
    assert imported == {"n": 24, "k": len(paths)}  # whole paths, three levels deep
    assert store.one("SELECT true_label FROM products LIMIT 1")["true_label"].count(" >> ") == 2

    stamp = (home / "models" / "demo" / "metadata.json").stat().st_mtime_ns
    second = _serve(home, data, "--prepare-only")
    assert second.returncode == 0 and "one-time password" not in second.stdout  # no second admin, no new password
    assert (home / "models" / "demo" / "metadata.json").stat().st_mtime_ns == stamp
    assert store.one("SELECT COUNT(*) AS n FROM products")["n"] == 24  # not imported twice
    assert store.one("SELECT COUNT(*) AS n FROM users")["n"] == 1


def test_admin_from_the_environment_gets_no_one_time_password(tmp_path):
    from core.studio.auth import authenticate
    from core.studio.store import Store

    proc = _serve(tmp_path / "home", tmp_path / "nowhere", "--prepare-only", "--no-demo",
                  env_extra={"STUDIO_ADMIN_USER": "boss", "STUDIO_ADMIN_PASSWORD": "a-long-secret"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "one-time password" not in proc.stdout
    user = authenticate(Store(tmp_path / "home" / "data" / "studio.db"), "boss", "a-long-secret")
    assert user is not None and user.role == "admin" and not user.must_change_password


def test_serve_starts_the_app(tmp_path):
    import signal
    import time
    import urllib.request

    from helpers.browser import free_port

    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home"), "STUDIO_DEMO_DATA": str(tmp_path / "nowhere")}
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 90, b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        assert body == b"ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert "one-time password:" in out and "No model yet and no demo catalogue" in out
