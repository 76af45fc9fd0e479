"""Credentials and roles: API tokens and JWTs, the log-in throttle, revocation, and the
role matrix (the role as it is now, not as it was when the token was made)."""

from __future__ import annotations

import pytest
from helpers.api import error_of

from helpers.app_home import PASSWORDS

# (method, path, body) of one call per area, and the roles allowed to make it
CALLS = [
    ("post", "/v1/predict", {"items": [{"text": "Acme watch dial"}]}, {"admin", "rita", "victor"}),
    ("post", "/v1/explain", {"text": "Acme watch dial"}, {"admin", "rita", "victor"}),
    ("get", "/v1/models", None, {"admin", "rita", "victor"}),
    ("get", "/v1/monitor", None, {"admin", "rita", "victor"}),
    ("get", "/v2/models/catalog", None, {"admin", "rita", "victor"}),
    ("get", "/v1/review/next", None, {"admin", "rita"}),
    ("post", "/v1/train", {"options": {"not_an_option": 1}}, {"admin"}),  # admin: 400 (refused before starting)
    ("get", "/v1/jobs/999", None, {"admin"}),  # admin: 404
    ("post", "/v1/models/nope/promote", {}, {"admin"}),  # admin: 404
]


def _call(api, method, path, body, who):
    return getattr(api, method)(path, who, **({"json": body} if body is not None else {}))


def test_every_endpoint_but_health_needs_a_token_and_the_right_role(api):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2"):
        assert api.get(path, None).status_code == 200, path
    assert api.get("/v2/health/ready", None).json()["ready"] is True
    for method, path, body, allowed in CALLS:
        r = _call(api, method, path, body, None)
        assert r.status_code == 401 and error_of(r)["code"] == "unauthorized", (path, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        for who in ("admin", "rita", "victor"):
            r = _call(api, method, path, body, who)
            if who in allowed:
                assert r.status_code in (200, 204, 400, 404), (path, who, r.text)
                assert r.status_code != 403
            else:
                assert r.status_code == 403 and error_of(r)["code"] == "forbidden", (path, who, r.text)
    r = api.client.get("/v1/models", headers={"Authorization": "Bearer cst_forged-token"})
    assert r.status_code == 401 and "invalid" in error_of(r)["message"]
    r = api.client.get("/v1/models", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401


def test_jwt_login_then_calls_then_a_password_change_ends_it(api):
    from core.studio.auth import User, reset_password
    from core.studio.store import Store

    r = api.client.post("/v1/auth/token", data={"username": "rita", "password": PASSWORDS["rita"]})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    assert r.json()["token_type"] == "bearer" and 0 < r.json()["expires_in"] <= 3600
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/review/next", headers=bearer).status_code in (200, 204)
    assert api.client.get("/v1/train", headers=bearer).status_code == 405  # a POST route
    r = api.client.post("/v1/models/x/promote", headers=bearer)
    assert r.status_code == 403  # a reviewer

    reset_password(Store(), "rita", "a-brand-new-pass-9", by=User.system("test"))
    r = api.client.get("/v1/models", headers=bearer)
    assert r.status_code == 401, "a JWT issued before a password reset must stop working"
    r = api.client.post("/v1/auth/token", data={"username": "rita", "password": "a-brand-new-pass-9"})
    assert r.status_code == 200
    assert api.client.get("/v1/models", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).status_code == 200


def test_wrong_passwords_are_throttled_with_retry_after(api):
    from core.studio.auth import FREE_FAILURES

    for _ in range(FREE_FAILURES):
        r = api.client.post("/v1/auth/token", data={"username": "victor", "password": "wrong-password-1"})
        assert r.status_code == 401 and error_of(r)["message"] == "wrong username or password"
    r = api.client.post("/v1/auth/token", data={"username": "victor", "password": PASSWORDS["victor"]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert error_of(r)["code"] == "too_many_requests"
    # an unknown name answers like a known one and is throttled too
    for _ in range(FREE_FAILURES):
        assert api.client.post("/v1/auth/token", data={"username": "nobody", "password": "x" * 12}).status_code == 401
    assert api.client.post("/v1/auth/token", data={"username": "nobody", "password": "x" * 12}).status_code == 429
    # a form with nothing in it is a 4xx, not a crash
    assert api.client.post("/v1/auth/token", data={}).status_code == 422
    assert api.client.post("/v1/auth/token", data={"username": "a", "password": "p" * 5000}).status_code == 401


def test_revoked_tokens_disabled_users_and_demotions_apply_at_once(api):
    from core.studio.auth import User, set_role
    from core.studio.store import Store
    from core.studio.tokens import create_token, list_tokens, revoke_token

    store = Store()
    admin = User.system("test")
    second = create_token(store, admin, "victor", "nightly job")
    assert api.client.get("/v1/models", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    listed = {t.label: t for t in list_tokens(store, admin)}
    assert listed["nightly job"].last_used_at is not None and second not in str(listed)
    assert revoke_token(store, admin, listed["nightly job"].id) is True
    assert revoke_token(store, admin, listed["nightly job"].id) is False
    assert api.client.get("/v1/models", headers={"Authorization": f"Bearer {second}"}).status_code == 401
    assert api.get("/v1/models", "victor").status_code == 200  # the other token still works

    set_role(store, admin, "rita", "viewer")
    assert api.get("/v1/review/next", "rita").status_code == 403
    set_role(store, admin, "rita", disabled=True)
    assert api.get("/v1/models", "rita").status_code == 401
    with pytest.raises(Exception, match="disabled"):
        create_token(store, admin, "rita")
    audit = [r["action"] for r in store.query("SELECT action FROM audit WHERE action LIKE 'token.%'")]
    assert audit.count("token.create") == 4 and audit.count("token.revoke") == 1
