"""Shared test fixtures: an isolated STUDIO_HOME, a generated product catalogue, and a
local HTTP server. Everything is offline and written under pytest's tmp_path.

Typical use::

    def test_something(make_catalogue, tmp_path, studio_home):
        cat = make_catalogue(tmp_path, n_per_class=10, classes=("Watches", "Toys"))
        catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)

The generated catalogue is learnable on purpose: each class has its own words (in title
and description) and its own dominant colour (a filled shape on a white background), so
model tests can assert that a tiny model beats chance from text alone or image alone.
"""

from __future__ import annotations

import http.server

# AppTest clears Streamlit's caches per test, so every test would pay the explainer's
# warm-up (tracing SHAP and Grad-CAM) again: minutes over the suite. Servers keep it on.
import os  # noqa: E402
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers.catalogues import SyntheticCatalogue, write_catalogue

os.environ.setdefault("STUDIO_EXPLAIN_WARM_UP", "0")

# --------------------------------------------------------------------------- STUDIO_HOME


@pytest.fixture
def studio_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point STUDIO_HOME (models, caches, database) at a fresh temporary folder."""
    home = tmp_path / "studio_home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home


@pytest.fixture
def make_catalogue() -> Callable[..., SyntheticCatalogue]:
    """`make_catalogue(tmp_path, n_per_class=8, classes=(...), with_images=True, ...)`:
    see `write_catalogue` for every option."""
    return write_catalogue


# --------------------------------------------------------------------------- HTTP server


@dataclass
class LocalServer:
    """A static file server on 127.0.0.1; `requests` lists the paths asked for."""

    root: Path
    base_url: str
    requests: list[str]

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@pytest.fixture
def http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve `tmp_path / "www"` over HTTP on a free port in a thread.

    Proxy variables are removed for the test so urllib talks to the server directly, and
    private addresses are allowed (the server is on 127.0.0.1, which downloads refuse by
    default: tests/test_downloads.py proves the refusal without this)."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("STUDIO_ALLOW_PRIVATE_URLS", "1")
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            seen.append(self.path)
            super().do_GET()

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LocalServer(root=root, base_url=f"http://127.0.0.1:{server.server_address[1]}", requests=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- app home


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real model bundle, trained once per test session (see app_home.py)."""
    from helpers.app_home import train_tiny_bundle

    root = tmp_path_factory.mktemp("tiny_bundle")
    with pytest.MonkeyPatch.context() as patch:  # session-scoped: the function-scoped monkeypatch is not available
        patch.setenv("STUDIO_HOME", str(root / "home"))
        return train_tiny_bundle(root)


@pytest.fixture
def app_home(tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh STUDIO_HOME with the tiny model live and users admin / rita (reviewer) /
    victor (viewer); passwords in app_home.PASSWORDS."""
    from helpers.app_home import build_app_home
    from helpers.studio import cheap_hashes

    cheap_hashes(monkeypatch)  # hashing is tested in test_auth: three users per app test stay cheap
    built = build_app_home(tmp_path / "app_home", tiny_bundle)
    monkeypatch.setenv("STUDIO_HOME", str(built.home))
    return built


@pytest.fixture
def store(studio_home: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh studio database under the test's home, with cheap password hashes (hashing
    is tested in test_auth); test modules that need another store define their own."""
    from helpers.studio import cheap_hashes

    from core.studio.store import Store

    cheap_hashes(monkeypatch)
    return Store()


@pytest.fixture
def fresh_streamlit_process():
    """AppTest runs the app in this process: `st.cache_resource` (the cached Store, the
    bootstrap, the loaded model) would carry one test's STUDIO_HOME into the next."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager

    st.cache_resource.clear()
    st.cache_data.clear()
    # AppTest resets Streamlit's legacy pages/ mode before every run, so each run would
    # start by running the page file alone; a real server leaves it after its first run
    # (pages/_ui/session.py switches it off there). Start every AppTest run as a warm server.
    original_init = PagesManager.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    try:
        yield
    finally:
        PagesManager.__init__ = original_init
        st.cache_resource.clear()
