"""core.studio.review_queue on hand-made predictions: the orders, claims (never two reviewers
on one item, expiry), skip / accept / correct, feedback, and concurrent reviewers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from helpers.studio import LABELS, add_predicted_product, add_prediction, count, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied
from core.studio.review_queue import (
    DEFAULT_ORDER,
    ORDERS,
    claim_next,
    pending_count,
    record_feedback,
    record_review,
    release,
    reviews_of,
)

# name: (fused, text_probs, image_probs) → confidence, margin, disagree
#   A  .50 .05 no    B  .40 .10 no    C  .90 .84 yes    D  .60 .22 no    E  .70 .55 yes
SPECS = {
    "A": ([0.50, 0.45, 0.05], None, None),
    "B": ([0.40, 0.30, 0.30], [0.4, 0.3, 0.3], None),
    "C": ([0.90, 0.06, 0.04], [0.90, 0.05, 0.05], [0.10, 0.80, 0.10]),
    "D": ([0.60, 0.38, 0.02], [0.6, 0.3, 0.1], [0.7, 0.2, 0.1]),
    "E": ([0.70, 0.15, 0.15], [0.1, 0.2, 0.7], [0.7, 0.2, 0.1]),
}
EXPECTED = {
    "least_confidence": "BADEC",
    "margin": "ABDEC",
    "disagreement": "ECBAD",
}


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rev1", "reviewer"), ("rev2", "reviewer"), ("rev3", "reviewer"),
                      ("viewer", "viewer"), ("viewer2", "viewer"))


@pytest.fixture
def products(store) -> dict[str, int]:
    """The five products of SPECS, inserted in name order (so ids follow A..E)."""
    return {name: add_predicted_product(store, fused, text_probs=t, image_probs=i, text=f"product {name}")[0]
            for name, (fused, t, i) in SPECS.items()}


def order_of(store, user, order: str) -> str:
    """The whole queue as the reviewer meets it: claim the next item and skip it, repeatedly."""
    names = {}
    for name, pid in ((r["text"][-1], r["id"]) for r in store.query("SELECT id, text FROM products")):
        names[pid] = name
    seen = ""
    while (item := claim_next(store, user, order)) is not None and not item.skipped:
        seen += names[item.product_id]
        record_review(store, user, item.product_id, "skip")
        assert len(seen) <= len(names)
    return seen


def test_the_hand_made_predictions_are_what_the_orders_see(store, products):
    rows = {r["product_id"]: r for r in store.query("SELECT * FROM predictions")}
    got = {name: (rows[pid]["confidence"], rows[pid]["margin"], rows[pid]["disagree"])
           for name, pid in products.items()}
    assert got == {"A": (0.5, 0.05, 0), "B": (0.4, 0.1, 0), "C": (0.9, 0.84, 1), "D": (0.6, 0.22, 0),
                   "E": (0.7, 0.55, 1)}


@pytest.mark.parametrize("order", list(ORDERS))
def test_queue_orders(store, users, products, order):
    assert order_of(store, users["rev1"], order) == EXPECTED[order]


@pytest.mark.parametrize("level, expected", [(None, "PRQ"), (1, "RQP"), (2, "PRQ")])
def test_a_tree_model_s_queue_orders_by_the_confidence_of_a_chosen_level(store, users, level, expected):
    """P is unsure of its leaf but sure of its department (Home 0.90); R is the reverse
    story at level 1 (Home 0.60): the whole-path order and the level-1 order disagree."""
    from core.studio.review_queue import level_order

    labels = ["Home >> Bath", "Home >> Bed", "Toys >> Puzzles"]
    fused = {"P": [0.45, 0.45, 0.10], "Q": [0.10, 0.05, 0.85], "R": [0.60, 0.00, 0.40]}
    for name, probs in fused.items():
        add_predicted_product(store, probs, labels=labels, text=f"product {name}")
    stored = [json.loads(r["level_confidences"]) for r in store.query("SELECT * FROM predictions ORDER BY id")]
    assert stored == [[0.9, 0.45], [0.85, 0.85], [0.6, 0.6]]
    order = "least_confidence" if level is None else level_order(level)
    assert order_of(store, users["rev1"], order) == expected


def test_a_bad_level_order_is_an_input_error(store, users):
    with pytest.raises(InputError, match="unknown queue order"):
        pending_count(store, users["rev1"], "least_confidence@x")


def test_every_order_is_tested():
    assert set(EXPECTED) == set(ORDERS) and DEFAULT_ORDER in ORDERS


def test_unknown_order_is_an_input_error(store, users, products):
    with pytest.raises(InputError, match="unknown queue order"):
        claim_next(store, users["rev1"], "random")


def test_the_queue_uses_the_latest_prediction(store, users, products):
    # C was the most confident; re-scored, it is now the least
    add_prediction(store, products["C"], [0.34, 0.33, 0.33])
    item = claim_next(store, users["rev1"], "least_confidence")
    assert item.product_id == products["C"] and item.confidence == pytest.approx(0.34)
    assert pending_count(store, users["rev1"]) == 5  # one item per product, not per prediction


def test_queue_item_fields(store, users, products):
    item = claim_next(store, users["rev1"], "disagreement")
    assert item.product_id == products["E"] and item.text == "product E" and item.source == "test"
    assert item.labels == LABELS and item.fused == SPECS["E"][0] and item.label == "Kitchen"
    assert item.text_probs == SPECS["E"][1] and item.image_probs == SPECS["E"][2]
    assert item.disagree is True and item.image_path is None and item.model_version == "v-test"
    assert item.top(2) == [("Kitchen", 0.7), ("Toys", 0.15)]
    assert item.claim_expires_at > time.time()


def test_empty_queue_gives_none(store, users):
    assert claim_next(store, users["rev1"]) is None
    assert pending_count(store) == 0


# --------------------------------------------------------------------------- claims


def test_two_reviewers_get_different_items_and_each_keeps_theirs(store, users, products):
    first = claim_next(store, users["rev1"])
    second = claim_next(store, users["rev2"])
    assert first.product_id == products["B"] and second.product_id == products["A"]
    for _ in range(3):  # page reloads, even under another order, keep the same item
        assert claim_next(store, users["rev1"]).product_id == first.product_id
        assert claim_next(store, users["rev1"], "disagreement").product_id == first.product_id
        assert claim_next(store, users["rev2"]).product_id == second.product_id
    claims = store.query("SELECT product_id, user FROM claims ORDER BY user")
    assert claims == [{"product_id": first.product_id, "user": "rev1"},
                      {"product_id": second.product_id, "user": "rev2"}]
    # someone else's claim hides the item from the count too
    assert pending_count(store, users["rev3"]) == 3
    assert pending_count(store, users["rev1"]) == 4
    assert pending_count(store) == 5  # everyone's open items: held ones are still open


def test_an_expired_claim_is_released(store, users, products):
    held = claim_next(store, users["rev1"], ttl=0.05)
    assert claim_next(store, users["rev2"]).product_id != held.product_id
    release(store, users["rev2"])
    time.sleep(0.1)
    assert claim_next(store, users["rev2"]).product_id == held.product_id
    assert store.query("SELECT user FROM claims") == [{"user": "rev2"}]


def test_a_claim_expired_in_the_database_is_released(store, users, products):
    held = claim_next(store, users["rev1"])
    with store.transaction() as db:
        db.execute("UPDATE claims SET expires_at = ?", [time.time() - 1])
    assert claim_next(store, users["rev2"]).product_id == held.product_id


def test_release_gives_the_item_back(store, users, products):
    held = claim_next(store, users["rev1"])
    release(store, users["rev1"], held.product_id)
    assert claim_next(store, users["rev2"]).product_id == held.product_id
    release(store, users["rev2"])
    assert count(store, "claims") == 0


def test_a_viewer_cannot_claim_or_review(store, users, products):
    with pytest.raises(PermissionDenied):
        claim_next(store, users["viewer"])
    with pytest.raises(PermissionDenied):
        record_review(store, users["viewer"], products["A"], "accept")
    assert count(store, "claims") == 0 and count(store, "reviews") == 0


# --------------------------------------------------------------------------- decisions


def test_a_skipped_item_comes_back_after_the_others(store, users, products):
    item = claim_next(store, users["rev1"])
    record_review(store, users["rev1"], item.product_id, "skip")
    assert count(store, "claims") == 0  # the decision released the claim
    assert pending_count(store, users["rev1"]) == 5  # skipped is not gone
    assert pending_count(store) == 5
    assert claim_next(store, users["rev2"]).product_id == item.product_id  # others are not affected
    release(store, users["rev2"])
    seen = []
    while not (nxt := claim_next(store, users["rev1"])).skipped:
        seen.append(nxt.product_id)
        record_review(store, users["rev1"], nxt.product_id, "skip")
    assert item.product_id not in seen and len(seen) == 4
    assert nxt.product_id == item.product_id  # the first skipped comes back first, marked
    review = reviews_of(store, item.product_id)[0]
    assert (review["decision"], review["old_label"], review["new_label"]) == ("skip", "Kitchen", None)


def test_accept_and_correct_remove_the_item_for_everyone(store, users, products):
    assert pending_count(store) == 5
    item = claim_next(store, users["rev1"])
    record_review(store, users["rev1"], item.product_id, "accept", note="  looks right ")
    assert pending_count(store) == 4 and pending_count(store, users["rev2"]) == 4

    other = claim_next(store, users["rev2"])
    assert other.product_id != item.product_id
    review_id = record_review(store, users["rev2"], other.product_id, "correct", new_label=" Watches ",
                              prediction_id=other.prediction_id)
    assert pending_count(store) == 3 and count(store, "claims") == 0
    seen = set()
    while (nxt := claim_next(store, users["rev3"])) is not None and not nxt.skipped:
        seen.add(nxt.product_id)
        record_review(store, users["rev3"], nxt.product_id, "skip")
    assert seen == set(products.values()) - {item.product_id, other.product_id}

    accepted = reviews_of(store, item.product_id)
    assert [(r["reviewer"], r["decision"], r["old_label"], r["new_label"], r["note"], r["model_version"])
            for r in accepted] == [("rev1", "accept", "Kitchen", "Kitchen", "looks right", "v-test")]
    corrected = reviews_of(store, other.product_id)
    assert corrected[0]["id"] == review_id and corrected[0]["prediction_id"] == other.prediction_id
    assert (corrected[0]["decision"], corrected[0]["old_label"], corrected[0]["new_label"]) == \
        ("correct", "Kitchen", "Watches")


@pytest.mark.parametrize("new_label, message", [("Gadgets", "not a category"), ("", "pick the right category"),
                                                (None, "pick the right category"),
                                                ("kitchen", "not a category")])
def test_correcting_to_an_unknown_label_writes_nothing(store, users, products, new_label, message):
    item = claim_next(store, users["rev1"])
    with pytest.raises(InputError, match=message):
        record_review(store, users["rev1"], item.product_id, "correct", new_label=new_label)
    assert count(store, "reviews") == 0
    assert pending_count(store) == 5
    # the failed decision rolled back whole: the reviewer still holds the item
    assert store.query("SELECT product_id, user FROM claims") == [{"product_id": item.product_id, "user": "rev1"}]


def test_bad_decisions_and_products(store, users, products):
    with pytest.raises(InputError, match="unknown decision"):
        record_review(store, users["rev1"], products["A"], "maybe")
    with pytest.raises(InputError, match="no product 999"):
        record_review(store, users["rev1"], 999, "accept")
    from core.studio.scoring import insert_product

    with store.transaction() as db:
        unscored = insert_product(db, "not scored", None, "test", None)
    with pytest.raises(InputError, match="has neither a prediction nor a label"):
        record_review(store, users["rev1"], unscored, "accept")
    a_prediction = store.one("SELECT id FROM predictions WHERE product_id = ?", [products["A"]])["id"]
    with pytest.raises(InputError, match="is not of product"):  # a prediction of another product
        record_review(store, users["rev1"], products["B"], "accept", prediction_id=a_prediction)
    assert count(store, "reviews") == 0


def test_a_viewers_feedback_is_a_suggestion_never_a_label(store, users):
    """Bug: a viewer's "No, the right category is…" was saved as a correction and trained on."""
    from core.studio.labels import labelled_products

    viewer, other = users["viewer"], users["viewer2"]
    mine, _ = add_predicted_product(store, SPECS["A"][0], created_by="viewer")
    again, _ = add_predicted_product(store, SPECS["B"][0], created_by="viewer")

    feedback = record_feedback(store, viewer, mine)
    row = reviews_of(store, mine)[0]
    assert feedback.suggestion and row["id"] == feedback.review_id
    assert (row["reviewer"], row["decision"], row["new_label"]) == ("viewer", "suggest", "Kitchen")
    record_feedback(store, viewer, again, correct_label="Toys", note="it is a doll")
    assert [(r["decision"], r["new_label"]) for r in reviews_of(store, again)] == [("suggest", "Toys")]
    with pytest.raises(InputError, match="not a category"):
        record_feedback(store, viewer, again, correct_label="Gadgets")
    with pytest.raises(InputError, match="products you scored"):
        record_feedback(store, other, mine, correct_label="Toys")
    with pytest.raises(InputError, match="no product"):
        record_feedback(store, viewer, 12345)

    # suggestions are no labels: both products stay in the queue and out of training
    assert pending_count(store) == 2 and labelled_products(store).empty
    item = claim_next(store, users["rev1"])
    shown = {item.product_id: item}
    release(store, users["rev1"])
    record_review(store, users["rev1"], item.product_id, "skip")
    nxt = claim_next(store, users["rev1"])
    shown[nxt.product_id] = nxt
    assert [(s["reviewer"], s["new_label"], s["note"]) for s in shown[again].suggestions] == \
        [("viewer", "Toys", "it is a doll")]  # reviewers see the suggestion

    # a reviewer's feedback on anyone's product is a decision
    feedback = record_feedback(store, users["rev1"], mine, correct_label="Watches")
    assert not feedback.suggestion
    assert [r["decision"] for r in reviews_of(store, mine)] == ["suggest", "correct"]
    assert labelled_products(store)["label"].tolist() == ["Watches"]


def test_record_feedback_has_no_permission_argument():
    """The caller must not pick which permission is checked."""
    import inspect

    assert "action" not in inspect.signature(record_feedback).parameters
    assert "action" not in inspect.signature(record_review).parameters


# --------------------------------------------------------------------------- concurrency


# products not yet accepted/corrected by anyone nor skipped by this reviewer, held or not
LEFT_FOR = """SELECT COUNT(*) AS n FROM products pr
WHERE EXISTS (SELECT 1 FROM predictions p WHERE p.product_id = pr.id)
  AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.product_id = pr.id
                  AND (r.decision IN ('accept', 'correct') OR (r.decision = 'skip' AND r.reviewer = ?)))"""
# (skipped items come back after the others: a reviewer is done when only those are left)


def test_concurrent_reviewers_never_hold_the_same_item(store):
    """4 reviewers claim and decide as fast as they can: no item is ever held by two at
    once, every item is accepted exactly once or skipped once by each reviewer."""
    n_reviewers = 4
    users = make_users(store, *[(f"r{i}", "reviewer") for i in range(n_reviewers)])
    ids = [add_predicted_product(store, [0.5 + i / 1000, 0.3, 0.2 - i / 1000], text=f"p{i}")[0] for i in range(40)]
    to_accept = set(ids[::2])

    held: dict[int, str] = {}
    lock, barrier, errors = threading.Lock(), threading.Barrier(n_reviewers), []
    taken: list[tuple[str, int]] = []

    def work(name: str) -> None:
        user = users[name]
        try:
            barrier.wait(10)
            while True:
                item = claim_next(store, user, ttl=60)
                if item is not None and item.skipped:
                    release(store, user)
                    item = None
                if item is None:
                    # nothing free for me now; stop only when nothing is left for me at all
                    # (items another reviewer holds come back when that reviewer skips them)
                    if store.one(LEFT_FOR, [name])["n"] == 0:
                        break
                    time.sleep(0.005)
                    continue
                with lock:
                    holder = held.get(item.product_id)
                    assert holder is None, f"{name} got product {item.product_id} held by {holder}"
                    held[item.product_id] = name
                    taken.append((name, item.product_id))
                # the same reviewer asking again gets the same item
                assert claim_next(store, user, ttl=60).product_id == item.product_id
                with lock:
                    del held[item.product_id]  # before the decision releases the claim
                decision = "accept" if item.product_id in to_accept else "skip"
                record_review(store, user, item.product_id, decision)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(n_reviewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    reviews = store.query("SELECT product_id, reviewer, decision FROM reviews")
    accepted = [r["product_id"] for r in reviews if r["decision"] == "accept"]
    assert sorted(accepted) == sorted(to_accept)  # each exactly once
    skips = {(r["product_id"], r["reviewer"]) for r in reviews if r["decision"] == "skip"}
    assert len(skips) == len([r for r in reviews if r["decision"] == "skip"])  # no double skip
    assert skips == {(pid, f"r{i}") for pid in set(ids) - to_accept for i in range(n_reviewers)}
    assert len(taken) == len(reviews)
    assert {name for name, _ in taken} == {f"r{i}" for i in range(n_reviewers)}
    assert pending_count(store) == 20 and count(store, "claims") == 0
