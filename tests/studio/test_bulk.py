"""core.studio.bulk on a real SQLite file: the preview, a bulk accept as ordinary audited
decisions, products decided meanwhile left alone, and an undo that never touches a
later decision."""

from __future__ import annotations

import threading
import time

import pytest
from helpers.studio import add_predicted_product, add_prediction, count, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied
from core.studio.bulk import bulk_accept, get_bulk, preview_bulk_accept, undo_bulk
from core.studio.labels import labelled_products
from core.studio.review_queue import DecisionConflict, record_review


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rita", "reviewer"), ("bob", "reviewer"), ("victor", "viewer"))


@pytest.fixture
def products(store) -> dict[str, int]:
    """Confidence .95 Kitchen, .91 Kitchen, .85 Toys, .60 Watches (labels Kitchen, Toys, Watches)."""
    return {
        "k1": add_predicted_product(store, [0.95, 0.03, 0.02], text="k1")[0],
        "k2": add_predicted_product(store, [0.91, 0.05, 0.04], text="k2")[0],
        "t1": add_predicted_product(store, [0.10, 0.85, 0.05], text="t1")[0],
        "w1": add_predicted_product(store, [0.20, 0.20, 0.60], text="w1")[0],
    }


def settled(store) -> dict[int, tuple[str | None, str | None]]:
    """product → (decision, label) of its settled decision (the store's view)."""
    return {r["product_id"]: (r["decision"], r["new_label"]) for r in store.query("SELECT * FROM settled")}


def test_preview_counts_undecided_products_above_the_threshold_per_class(store, users, products):
    rita = users["rita"]
    everything = list(products.values())
    preview = preview_bulk_accept(store, rita, everything, 0.9)
    assert preview.product_ids == [products["k1"], products["k2"]] and preview.count == 2
    assert preview.per_class == {"Kitchen": 2} and preview.selected == 4
    record_review(store, users["bob"], products["k1"], "correct", new_label="Toys")
    preview = preview_bulk_accept(store, rita, everything, 0.8)
    assert preview.per_class == {"Kitchen": 1, "Toys": 1}
    assert preview_bulk_accept(store, rita, [products["w1"]], 0.8).count == 0
    assert preview_bulk_accept(store, rita, [], 0.5).count == 0
    # only the latest prediction counts
    add_prediction(store, products["w1"], [0.05, 0.05, 0.90])
    assert preview_bulk_accept(store, rita, [products["w1"]], 0.8).per_class == {"Watches": 1}
    for bad in (-0.1, 1.5, "high", None):
        with pytest.raises(InputError, match="threshold"):
            preview_bulk_accept(store, rita, everything, bad)


def test_bulk_accept_writes_one_audited_decision_per_product(store, users, products):
    rita = users["rita"]
    bulk_id = bulk_accept(store, rita, list(products.values()), 0.8, "source = test")
    rows = store.query("SELECT * FROM reviews ORDER BY product_id")
    assert [(r["product_id"], r["decision"], r["new_label"], r["old_label"], r["reviewer"], r["bulk_id"])
            for r in rows] == [(products["k1"], "accept", "Kitchen", "Kitchen", "rita", bulk_id),
                               (products["k2"], "accept", "Kitchen", "Kitchen", "rita", bulk_id),
                               (products["t1"], "accept", "Toys", "Toys", "rita", bulk_id)]
    latest = {r["product_id"]: r["id"] for r in store.query("SELECT product_id, MAX(id) AS id FROM predictions "
                                                            "GROUP BY product_id")}
    assert all(r["prediction_id"] == latest[r["product_id"]] for r in rows)
    action = get_bulk(store, rita, bulk_id)
    assert (action.user, action.action, action.count, action.threshold, action.filter, action.undone_at) == (
        "rita", "accept", 3, 0.8, "source = test", None)
    audit = store.one("SELECT * FROM audit WHERE action = 'bulk.accept'")
    assert audit["user"] == "rita" and f'"bulk_id":{bulk_id}' in audit["detail"]
    assert settled(store) == {products["k1"]: ("accept", "Kitchen"), products["k2"]: ("accept", "Kitchen"),
                              products["t1"]: ("accept", "Toys")}
    # training sees them as decisions like any other
    train = labelled_products(store)
    assert set(train["id"]) == {products["k1"], products["k2"], products["t1"]}

    # nothing left above the threshold: a second bulk accept says so and writes nothing
    with pytest.raises(InputError, match="nothing was accepted"):
        bulk_accept(store, rita, list(products.values()), 0.8, "again")
    assert count(store, "bulk_actions") == 1 and count(store, "reviews") == 3


def test_products_decided_meanwhile_are_skipped_and_claims_released(store, users, products):
    rita, bob = users["rita"], users["bob"]
    preview = preview_bulk_accept(store, rita, list(products.values()), 0.8)
    with store.transaction() as db:  # bob has k1 open in his queue
        db["claims"].insert({"product_id": products["k1"], "user": "bob", "expires_at": time.time() + 600})
    record_review(store, bob, products["k2"], "correct", new_label="Toys")  # decided after the preview
    bulk_id = bulk_accept(store, rita, preview.product_ids, 0.8, "")
    assert get_bulk(store, rita, bulk_id).count == 2
    assert settled(store)[products["k2"]] == ("correct", "Toys")
    assert store.one("SELECT COUNT(*) AS n FROM reviews WHERE product_id = ?", [products["k2"]])["n"] == 1
    assert store.one("SELECT COUNT(*) AS n FROM claims")["n"] == 0
    # bob's screen is stale now: his late click is refused instead of overwriting the bulk decision
    with pytest.raises(DecisionConflict, match="meanwhile"):
        record_review(store, bob, products["k1"], "correct", new_label="Watches", seen_review_id=0)
    assert settled(store)[products["k1"]] == ("accept", "Kitchen")


def test_undo_keeps_a_later_decision(store, users, products):
    rita, bob = users["rita"], users["bob"]
    bulk_id = bulk_accept(store, rita, list(products.values()), 0.8, "all")
    record_review(store, bob, products["t1"], "correct", new_label="Watches")  # later than the bulk action
    result = undo_bulk(store, rita, bulk_id)
    assert (result.undone, result.kept) == (2, 1)
    assert settled(store) == {products["t1"]: ("correct", "Watches")}
    revoked = store.query("SELECT product_id, revoked_by FROM reviews WHERE revoked_at IS NOT NULL ORDER BY product_id")
    assert revoked == [{"product_id": products["k1"], "revoked_by": "rita"},
                       {"product_id": products["k2"], "revoked_by": "rita"}]
    action = get_bulk(store, rita, bulk_id)
    assert action.undone_by == "rita" and action.undone_at is not None
    assert store.one("SELECT COUNT(*) AS n FROM audit WHERE action = 'bulk.undo'")["n"] == 1
    # the undone products are back in the queue; a new bulk accept can take them again
    assert preview_bulk_accept(store, rita, list(products.values()), 0.8).product_ids == [products["k1"],
                                                                                         products["k2"]]
    with pytest.raises(InputError, match="undone already"):
        undo_bulk(store, rita, bulk_id)
    with pytest.raises(InputError, match="no bulk action"):
        undo_bulk(store, rita, 999)


def test_only_the_author_or_an_admin_undoes_and_viewers_cannot_bulk(store, users, products):
    rita, bob, victor, admin = users["rita"], users["bob"], users["victor"], users["admin"]
    with pytest.raises(PermissionDenied):
        preview_bulk_accept(store, victor, list(products.values()), 0.5)
    with pytest.raises(PermissionDenied):
        bulk_accept(store, victor, list(products.values()), 0.5, "")
    assert count(store, "reviews") == 0
    bulk_id = bulk_accept(store, rita, list(products.values()), 0.5, "")
    with pytest.raises(InputError, match="only rita or an admin"):
        undo_bulk(store, bob, bulk_id)
    assert undo_bulk(store, admin, bulk_id).undone == 4
    assert settled(store) == {}


def test_two_bulk_accepts_at_once_never_decide_a_product_twice(store, users, products):
    ids = list(products.values())
    results, errors = [], []

    def run(user):
        try:
            results.append(bulk_accept(store, user, ids, 0.5, "race"))
        except InputError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(users[name],)) for name in ("rita", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 1  # the second found nothing left to accept
    assert store.one("SELECT COUNT(*) AS n FROM reviews")["n"] == 4
    assert store.one("SELECT MAX(c) AS m FROM (SELECT COUNT(*) AS c FROM reviews GROUP BY product_id)")["m"] == 1
