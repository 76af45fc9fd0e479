"""The review queue over HTTP walks like the app's: claims keep two reviewers apart, a
correction lands on its own product only, stale decisions are refused, and the monitor
counts what was decided."""

from __future__ import annotations

from helpers.api import error_of

TEXTS = ["Acme watch dial strap", "Zenith skillet ladle kettle", "Bolt puzzle doll blocks", "Acme watch bezel chrono"]


def test_two_reviewers_work_the_queue_then_the_monitor_counts_it(api):
    from core.studio.auth import User, create_user
    from core.studio.store import Store
    from helpers.app_home import PASSWORDS

    store = Store()
    predicted = api.post("/v1/predict", "victor", json={"items": [{"text": t} for t in TEXTS]}).json()
    ids = [p["product_id"] for p in predicted["predictions"]]
    create_user(store, "rhea", PASSWORDS["rita"], "reviewer", by=User.system("test"))
    jwt = api.client.post("/v1/auth/token", data={"username": "rhea", "password": PASSWORDS["rita"]}).json()
    api.tokens["rhea"] = jwt["access_token"]

    a = api.get("/v1/review/next", "rita").json()
    assert api.get("/v1/review/next", "rita").json()["product_id"] == a["product_id"]  # kept until decided
    b = api.get("/v1/review/next", "rhea").json()
    assert b["product_id"] != a["product_id"] and {a["product_id"], b["product_id"]} <= set(ids)
    assert a["categories"] and a["label"] in a["categories"]

    # rhea cannot decide rita's item without having been shown it
    r = api.post(f"/v1/products/{a['product_id']}/review", "rhea", json={"decision": "accept"})
    assert r.status_code == 409 and "rita" in error_of(r)["message"]

    other = next(c for c in a["categories"] if c != a["label"])
    r = api.post(f"/v1/products/{a['product_id']}/review", "rita",
                 json={"decision": "correct", "label": other, "note": "wrong aisle",
                       "seen_review_id": a["seen_review_id"], "prediction_id": a["prediction_id"]})
    assert r.status_code == 200, r.text
    nxt = api.get("/v1/review/next", "rita").json()
    assert nxt["product_id"] not in (a["product_id"], b["product_id"])
    # the correction did not carry over to the next item: accepting it keeps its own label
    r = api.post(f"/v1/products/{nxt['product_id']}/review", "rita",
                 json={"decision": "accept", "seen_review_id": nxt["seen_review_id"]})
    assert r.status_code == 200
    rows = {r["product_id"]: r for r in store.query("SELECT product_id, decision, old_label, new_label, reviewer, "
                                                    "note FROM reviews")}
    assert rows[a["product_id"]]["new_label"] == other and rows[a["product_id"]]["note"] == "wrong aisle"
    assert rows[nxt["product_id"]]["new_label"] == rows[nxt["product_id"]]["old_label"] == nxt["label"]

    # rhea decides her item from a screen shown before rita overrode it: refused
    r = api.post(f"/v1/products/{b['product_id']}/review", "rita", json={"decision": "accept"})
    assert r.status_code == 409  # rhea holds it
    api.post(f"/v1/products/{b['product_id']}/review", "rhea",
             json={"decision": "skip", "seen_review_id": b["seen_review_id"]})
    r = api.post(f"/v1/products/{b['product_id']}/review", "rita", json={"decision": "accept"})
    assert r.status_code == 200  # released by the skip
    r = api.post(f"/v1/products/{b['product_id']}/review", "rhea",
                 json={"decision": "correct", "label": other, "seen_review_id": b["seen_review_id"]})
    assert r.status_code == 409 and "nothing was saved" in error_of(r)["message"]

    monitor = api.get("/v1/monitor", "victor").json()
    assert monitor["summary"]["predictions"] == 4 and monitor["summary"]["reviews"] == 3
    assert monitor["summary"]["corrections"] == 1
    assert sum(monitor["confidence_histogram"]["counts"]) == 4
    assert sum(d["predictions"] for d in monitor["predictions_per_day"]) == 4
    assert monitor["model_version"] == predicted["model_version"]


def test_review_refuses_bad_decisions(api):
    predicted = api.post("/v1/predict", "victor", json={"items": [{"text": TEXTS[0]}]}).json()["predictions"][0]
    pid = predicted["product_id"]
    cases = [
        ({"decision": "correct", "label": "Not A Category"}, 400, "not a category"),
        ({"decision": "correct"}, 400, "pick the right category"),
        ({"decision": "maybe"}, 422, "decision"),
        ({"decision": "accept", "extra": 1}, 422, "extra"),
        ({"decision": "accept", "note": "n" * 3000}, 422, "note"),
    ]
    for body, status, words in cases:
        r = api.post(f"/v1/products/{pid}/review", "rita", json=body)
        assert r.status_code == status and words in error_of(r)["message"].lower(), (body, r.text)
    r = api.post("/v1/products/999999/review", "rita", json={"decision": "accept"})
    assert r.status_code == 404
    r = api.post("/v1/products/0/review", "rita", json={"decision": "accept"})
    assert r.status_code == 422
    r = api.post(f"/v1/products/{pid}/review", "victor", json={"decision": "accept"})
    assert r.status_code == 403  # a viewer's click is never a label
    r = api.get("/v1/review/next?order=loudest", "rita")
    assert r.status_code == 400 and "unknown queue order" in error_of(r)["message"]
    assert api.get("/v1/monitor?days=0", "victor").status_code == 422
    from core.studio.store import Store

    assert Store().one("SELECT count(*) AS n FROM reviews")["n"] == 0
    # the queue empties: 204
    item = api.get("/v1/review/next", "rita").json()
    api.post(f"/v1/products/{item['product_id']}/review", "rita", json={"decision": "accept",
                                                                         "seen_review_id": item["seen_review_id"]})
    assert api.get("/v1/review/next", "rita").status_code == 204
