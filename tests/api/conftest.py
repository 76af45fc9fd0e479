"""An API over a fresh app home (the tiny model live; admin / rita (reviewer) / victor
(viewer)), FastAPI's TestClient, and one API token per user."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]
    home: object  # helpers.app_home.AppHome

    def as_(self, name: str | None) -> dict[str, str]:
        """Headers for a call as `name` (None: no credentials)."""
        return {"Authorization": f"Bearer {self.tokens[name]}"} if name else {}

    def get(self, path: str, who: str | None = "admin", **kwargs):
        return self.client.get(path, headers={**self.as_(who), **kwargs.pop("headers", {})}, **kwargs)

    def post(self, path: str, who: str | None = "admin", **kwargs):
        return self.client.post(path, headers={**self.as_(who), **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
def api(app_home) -> Api:
    from core.api.app import create_app
    from core.studio.auth import User
    from core.studio.store import Store
    from core.studio.tokens import create_token

    store = Store()
    tokens = {name: create_token(store, User.system("test"), name) for name in ("admin", "rita", "victor")}
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        yield Api(client, tokens, app_home)

