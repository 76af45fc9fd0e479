"""Decisions that can be trusted, as sequences: a late click after a lost claim, undo,
change, out of scope, and products identified by content or id (a re-import, the same
product predicted twice) — on a real SQLite file."""

from __future__ import annotations

import time

import pytest
from helpers.studio import add_predicted_product, count, make_users

from core.common.errors import InputError
from core.studio.labels import import_catalogue, labelled_products
from core.studio.review_queue import (
    DecisionConflict,
    change_decision,
    claim_next,
    my_decisions,
    pending_count,
    record_review,
    reviews_of,
    undo_last,
)
from core.studio.store import Store


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("ann", "reviewer"), ("bob", "reviewer"))


def expire_claims(store) -> None:
    with store.transaction() as db:
        db.execute("UPDATE claims SET expires_at = ?", [time.time() - 1])


def test_a_late_decision_never_overwrites_a_newer_one(store, users):
    """Bug: A's claim expired, B corrected the item, A clicked Accept → training used A's."""
    product, _ = add_predicted_product(store, [0.5, 0.3, 0.2])
    shown_to_ann = claim_next(store, users["ann"])
    expire_claims(store)
    shown_to_bob = claim_next(store, users["bob"])
    assert shown_to_bob.product_id == product
    record_review(store, users["bob"], product, "correct", new_label="Watches",
                  seen_review_id=shown_to_bob.seen_review_id)

    with pytest.raises(DecisionConflict, match="someone decided meanwhile"):
        record_review(store, users["ann"], product, "accept", seen_review_id=shown_to_ann.seen_review_id)
    assert [r["reviewer"] for r in reviews_of(store, product)] == ["bob"]
    assert labelled_products(store)["label"].tolist() == ["Watches"]


def test_a_late_decision_is_saved_when_nobody_decided_meanwhile(store, users):
    product, _ = add_predicted_product(store, [0.5, 0.3, 0.2])
    shown = claim_next(store, users["ann"])
    expire_claims(store)
    record_review(store, users["ann"], product, "accept", seen_review_id=shown.seen_review_id)
    assert labelled_products(store)["label"].tolist() == ["Kitchen"]


def test_the_claim_holder_may_decide_an_item_decided_again(store, users):
    """Holding the claim is enough (an undone decision brings the item back to its reviewer)."""
    product, _ = add_predicted_product(store, [0.5, 0.3, 0.2])
    item = claim_next(store, users["ann"])
    record_review(store, users["ann"], product, "accept", seen_review_id=item.seen_review_id)
    undone = undo_last(store, users["ann"])
    assert undone.product_id == product and undone.decision == "accept"
    again = claim_next(store, users["ann"])
    assert again.product_id == product
    record_review(store, users["ann"], product, "correct", new_label="Toys", seen_review_id=again.seen_review_id)
    assert labelled_products(store)["label"].tolist() == ["Toys"]


def test_undo_brings_the_item_back_and_the_label_goes(store, users):
    first, _ = add_predicted_product(store, [0.5, 0.3, 0.2], text="first")
    second, _ = add_predicted_product(store, [0.6, 0.3, 0.1], text="second")
    item = claim_next(store, users["ann"])
    assert item.product_id == first
    record_review(store, users["ann"], first, "correct", new_label="Toys", seen_review_id=item.seen_review_id)
    assert claim_next(store, users["ann"]).product_id == second
    assert pending_count(store) == 1

    undone = undo_last(store, users["ann"])
    assert (undone.product_id, undone.decision, undone.label) == (first, "correct", "Toys")
    assert claim_next(store, users["ann"]).product_id == first  # the undone item is current again
    assert pending_count(store) == 2 and labelled_products(store).empty
    assert reviews_of(store, first)[0]["revoked_by"] == "ann"  # kept, marked undone
    assert store.one("SELECT action FROM audit WHERE action = 'review.undo'") is not None
    assert undo_last(store, users["ann"]) is None  # nothing more to undo


def test_undo_is_refused_once_someone_decided_after(store, users):
    product, _ = add_predicted_product(store, [0.5, 0.3, 0.2])
    record_review(store, users["ann"], product, "accept")
    record_review(store, users["bob"], product, "correct", new_label="Toys")
    with pytest.raises(DecisionConflict, match="bob decided"):
        undo_last(store, users["ann"])
    assert labelled_products(store)["label"].tolist() == ["Toys"]


def test_change_a_decision_from_my_list(store, users):
    product, _ = add_predicted_product(store, [0.5, 0.3, 0.2], text="a red watch")
    review_id = record_review(store, users["ann"], product, "accept")
    mine = my_decisions(store, users["ann"], search="red")
    assert mine["review_id"].tolist() == [review_id]
    assert my_decisions(store, users["ann"], search="blue").empty

    new_id = change_decision(store, users["ann"], review_id, "correct", new_label="Watches", note="the dial")
    assert labelled_products(store)["label"].tolist() == ["Watches"]
    rows = reviews_of(store, product)
    assert rows[0]["revoked_at"] is not None and rows[1]["replaces"] == review_id and rows[1]["id"] == new_id
    assert my_decisions(store, users["ann"])["review_id"].tolist() == [new_id]
    assert len(my_decisions(store, users["ann"], include_undone=True)) == 2

    with pytest.raises(InputError, match="only change your own"):
        change_decision(store, users["bob"], new_id, "accept")
    with pytest.raises(InputError, match="was undone already"):
        change_decision(store, users["ann"], review_id, "accept")
    with pytest.raises(InputError, match="not a category"):
        change_decision(store, users["ann"], new_id, "correct", new_label="Gadgets")
    assert labelled_products(store)["label"].tolist() == ["Watches"]  # the refused change wrote nothing
    change_decision(store, users["admin"], new_id, "accept")  # an admin settles anyone's
    assert labelled_products(store)["label"].tolist() == ["Kitchen"]


def test_out_of_scope_is_a_decision_never_trained_as_any_class(store, users, make_catalogue, tmp_path):
    from core.data.catalogue import load_catalogue

    cat = make_catalogue(tmp_path, n_per_class=2, with_images=False)
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    import_catalogue(store, users["admin"], catalogue, "c")
    product = store.one("SELECT id FROM products ORDER BY id LIMIT 1")["id"]
    record_review(store, users["ann"], product, "out_of_scope", note="a gift card")
    labelled = labelled_products(store)
    assert product not in labelled["id"].tolist() and len(labelled) == len(catalogue) - 1
    row = store.one("SELECT label, label_source FROM effective_labels WHERE product_id = ?", [product])
    assert row == {"label": None, "label_source": "out_of_scope"}


def test_reimporting_a_catalogue_updates_instead_of_doubling(store, users, make_catalogue, tmp_path):
    """Bug: re-importing the same catalogue added every product again ("0 already there")."""
    from core.data.catalogue import load_catalogue

    cat = make_catalogue(tmp_path, n_per_class=4)
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    first = import_catalogue(store, users["admin"], catalogue, "spring")
    assert (first.added, first.updated, first.unchanged) == (len(catalogue), 0, 0)
    second = import_catalogue(store, users["admin"], catalogue, "spring again")  # another name, same products
    assert (second.added, second.updated, second.unchanged) == (0, 0, len(catalogue))
    assert count(store, "products") == len(catalogue)

    catalogue.labels[0] = "Toys" if catalogue.labels[0] != "Toys" else "Watches"  # the catalogue fixed a label
    third = import_catalogue(store, users["admin"], catalogue, "spring")
    assert (third.added, third.updated, third.unchanged) == (0, 1, len(catalogue) - 1)
    assert count(store, "products") == len(catalogue)
    assert catalogue.labels[0] in labelled_products(store)["label"].tolist()


def test_an_id_column_identifies_products_whose_text_changed(store, users, make_catalogue, tmp_path):
    import csv

    from core.data.catalogue import load_catalogue

    cat = make_catalogue(tmp_path, n_per_class=3, with_images=False)
    rows = list(csv.DictReader(open(cat.csv_path)))
    for n, row in enumerate(rows):
        row["sku"] = f"SKU-{n:03d}"
    def write(rows):
        with open(cat.csv_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    write(rows)
    load = lambda: load_catalogue(cat.csv_path, text_cols=["title", "description"], label_col="category")  # noqa
    assert import_catalogue(store, users["admin"], load(), "c", id_col="sku").added == len(rows)
    rows[0]["description"] = "a completely new description"
    write(rows)
    again = import_catalogue(store, users["admin"], load(), "c", id_col="sku")
    assert (again.added, again.updated) == (0, 1)
    from core.studio.store import text_key

    assert store.one("SELECT text_key FROM products WHERE external_id = 'SKU-000'")["text_key"] == text_key(
        load().texts[0])  # the new text's key: a prediction of it finds this product's split
    assert count(store, "products") == len(rows)
    with pytest.raises(InputError, match="no id column 'code'"):
        import_catalogue(store, users["admin"], load(), "c", id_col="code")


def test_the_same_product_predicted_twice_is_one_product_and_one_queue_item(store, users, app_home):
    """Bug: the same photo + text predicted twice became two products and two queue items."""
    from core.models.classifier import Classifier
    from core.studio.scoring import score_product

    classifier = Classifier.load(app_home.bundle)
    store = Store()
    ann = make_users(store, ("ann2", "reviewer"))["ann2"]
    first = score_product(store, classifier, ann, text="Acme analog  wrist watch")
    second = score_product(store, classifier, ann, text="acme analog wrist WATCH ")  # same once normalised
    other = score_product(store, classifier, ann, text="Acme skillet")
    assert first.product_id == second.product_id != other.product_id
    assert count(store, "products") == 2 and count(store, "predictions") == 3
    assert pending_count(store) == 2
    item = claim_next(store, ann)
    record_review(store, ann, item.product_id, "accept", seen_review_id=item.seen_review_id)
    score_product(store, classifier, ann, text=store.one("SELECT text FROM products WHERE id = ?",
                                                         [item.product_id])["text"])
    assert pending_count(store) == 1  # a decided product predicted again does not re-enter the queue
