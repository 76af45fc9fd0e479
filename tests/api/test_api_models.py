"""The registry over HTTP: list and read versions, promote after a comparison, roll back;
the health check and the inference protocol follow the live version at once."""

from __future__ import annotations

from helpers.api import error_of
from helpers.apptest import second_bundle


def test_promote_then_roll_back(api):
    from core.studio.registry import sync_models
    from core.studio.store import Store

    first = api.get("/v1/models", "victor").json()["models"]
    assert len(first) == 1 and first[0]["live"] is True
    live = first[0]["version"]
    copy = second_bundle(api.home)
    sync_models(Store())
    listed = {m["version"]: m for m in api.get("/v1/models", "victor").json()["models"]}
    assert set(listed) == {live, copy} and listed[copy]["live"] is False
    assert "validation" in listed[live]["metrics"]
    detail = api.get(f"/v1/models/{copy}", "victor").json()
    assert detail["classes"] == ["Kitchen", "Toys", "Watches"] and detail["metadata"]["version"] == copy

    assert api.post(f"/v1/models/{copy}/promote", "rita", json={}).status_code == 403
    r = api.post(f"/v1/models/{copy}/promote", "admin", json={})
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == live and r.json()["live"] is True
    assert api.get("/v2/health/ready", None).json()["model_version"] == copy
    assert api.get("/v2/models/catalog", "victor").json()["parameters"]["version"] == copy
    predicted = api.post("/v1/predict", "victor", json={"items": [{"text": "Acme watch dial"}]}).json()
    assert predicted["model_version"] == copy

    r = api.post(f"/v1/models/{live}/promote", "admin")  # roll back (no body: the defaults)
    assert r.status_code == 200 and r.json()["previous"] == copy
    assert api.get("/v2/health/ready", None).json()["model_version"] == live
    again = api.post(f"/v1/models/{live}/promote", "admin").json()
    assert again["previous"] == live  # already live: nothing changes
    actions = [r["action"] for r in Store().query("SELECT action FROM audit WHERE action = 'model.promote'")]
    assert len(actions) == 2

    assert api.get("/v1/models/v-nope", "victor").status_code == 404
    r = api.post("/v1/models/v-nope/promote", "admin", json={"confirm_worse": "maybe"})
    assert r.status_code == 422
    r = api.post(f"/v1/models/{copy}/promote", "admin", json={"confirm_worse": False, "force": True})
    assert r.status_code == 422 and "force" in error_of(r)["message"]


def test_a_worse_candidate_needs_confirmation(api, monkeypatch):
    """The compare-first guard of the Models page: a candidate measured worse than the live
    model is refused unless confirm_worse."""
    import core.api.routes.models as routes
    from core.studio.compare import Comparison
    from core.studio.registry import sync_models
    from core.studio.store import Store

    copy = second_bundle(api.home)
    sync_models(Store())
    live = next(m["version"] for m in api.get("/v1/models").json()["models"] if m["live"])

    def worse(store, live_clf, candidate_clf, **_):
        metrics = lambda f1: {"accuracy": f1, "macro_f1": f1, "per_class_f1": {}}  # noqa: E731
        return Comparison(live_clf.version, candidate_clf.version, 40, metrics(0.9), metrics(0.7), 0.01)

    monkeypatch.setattr(routes, "compare", worse)
    r = api.post(f"/v1/models/{copy}/promote", "admin", json={})
    assert r.status_code == 400 and "worse than the live model" in error_of(r)["message"]
    assert api.get("/v2/health/ready", None).json()["model_version"] == live
    r = api.post(f"/v1/models/{copy}/promote", "admin", json={"confirm_worse": True})
    assert r.status_code == 200 and r.json()["comparison"]["worse"] is True
    assert r.json()["comparison"]["delta_macro_f1"] < 0


def test_without_a_live_model_the_api_says_it_is_not_ready(api):
    from core.studio.store import Store

    with Store().transaction() as db:
        db.execute("UPDATE models SET active = 0")
    r = api.get("/v2/health/ready", None)
    assert r.status_code == 503 and r.json()["ready"] is False
    r = api.post("/v1/predict", "victor", json={"items": [{"text": "Acme watch"}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_model" and r.headers["Retry-After"]
    r = api.post("/v2/models/catalog/infer", "victor",
                 json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Acme"]}]})
    assert r.status_code == 503
    assert api.get("/v1/models", "victor").json()["models"][0]["live"] is False
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert api.client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
