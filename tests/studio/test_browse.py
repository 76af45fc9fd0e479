"""core.studio.browse on a real SQLite file: every filter of the data browser, pagination and
counts, and one product's full history (predictions by version, decisions undone or not,
suggestions, bulk actions)."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers.studio import add_predicted_product, add_prediction, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied
from core.studio.browse import (
    BrowseFilters,
    count_products,
    filter_options,
    matching_ids,
    product_history,
    search_products,
)
from core.studio.bulk import bulk_accept, undo_bulk
from core.studio.review_queue import record_feedback, record_review, undo_last


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rita", "reviewer"), ("bob", "reviewer"), ("victor", "viewer"))


@pytest.fixture
def catalogue_ids(store, users, make_catalogue, tmp_path) -> list[int]:
    """A small imported catalogue (labels, photos, an evaluation slice); its product ids."""
    from core.data.catalogue import load_catalogue
    from core.studio.labels import import_catalogue

    cat = make_catalogue(tmp_path / "cat", n_per_class=4, classes=("Kitchen", "Toys", "Watches"))
    import_catalogue(store, users["admin"], load_catalogue(cat.csv_path, **cat.load_kwargs), "shop")
    return [r["id"] for r in store.query("SELECT id FROM products WHERE source = ? ORDER BY id", ["catalogue:shop"])]


@pytest.fixture
def predicted(store, users) -> dict[str, int]:
    """Uploaded products with hand-made predictions (labels Kitchen, Toys, Watches)."""
    return {
        "skillet": add_predicted_product(store, [0.92, 0.05, 0.03], text="Acme Skillet with Ladle",
                                         created_by="victor")[0],
        "doll": add_predicted_product(store, [0.30, 0.60, 0.10], text_probs=[0.1, 0.8, 0.1],
                                      image_probs=[0.8, 0.1, 0.1], text="plush DOLL for toddlers")[0],
        "watch": add_predicted_product(store, [0.05, 0.15, 0.80], text="Zenith chronograph ÉTÉ 100%",
                                       created_by="victor")[0],
    }


def ids(store, user, **filters) -> list[int]:
    return sorted(search_products(store, user, BrowseFilters(limit=1000, **filters))["product_id"].tolist())


def test_text_search_is_case_insensitive_and_literal(store, users, predicted):
    victor = users["victor"]
    assert ids(store, victor, text="skillet") == [predicted["skillet"]]
    assert ids(store, victor, text="  doll ") == [predicted["doll"]]
    assert ids(store, victor, text="été") == [predicted["watch"]]  # non-ASCII case folding too
    assert ids(store, victor, text="100%") == [predicted["watch"]]  # % is a character, not a wildcard
    assert ids(store, victor, text="%") == [predicted["watch"]]
    assert ids(store, victor, text="a_b") == []
    assert ids(store, victor) == sorted(predicted.values())


def test_label_filters_say_which_label(store, users, predicted, catalogue_ids):
    rita, victor = users["rita"], users["victor"]
    record_review(store, rita, predicted["doll"], "correct", new_label="Kitchen")
    kitchen_catalogue = ids(store, victor, label="Kitchen", label_kind="catalogue")
    assert len(kitchen_catalogue) == 4 and set(kitchen_catalogue) <= set(catalogue_ids)
    assert ids(store, victor, label="Kitchen", label_kind="predicted") == [predicted["skillet"]]
    assert ids(store, victor, label="Kitchen", label_kind="reviewed") == [predicted["doll"]]
    assert ids(store, victor, label="Kitchen", label_kind="effective") == sorted(kitchen_catalogue
                                                                                 + [predicted["doll"]])
    assert ids(store, victor, label="Kitchen", label_kind="any") == sorted(
        kitchen_catalogue + [predicted["doll"], predicted["skillet"]])
    with pytest.raises(InputError, match="label kind"):
        search_products(store, victor, BrowseFilters(label="Kitchen", label_kind="best"))


def test_source_confidence_disagreement_and_eval_filters(store, users, predicted, catalogue_ids):
    victor = users["victor"]
    assert ids(store, victor, source="catalogue:shop") == catalogue_ids
    assert ids(store, victor, source="test") == sorted(predicted.values())
    assert ids(store, victor, min_confidence=0.8) == [predicted["skillet"], predicted["watch"]]
    assert ids(store, victor, min_confidence=0.5, max_confidence=0.85) == [predicted["doll"], predicted["watch"]]
    assert ids(store, victor, disagreement="text_vs_image") == [predicted["doll"]]
    # a catalogue product predicted as something else than its catalogue label
    product = catalogue_ids[0]
    given = store.one("SELECT true_label FROM products WHERE id = ?", [product])["true_label"]
    other = next(label for label in ("Kitchen", "Toys", "Watches") if label != given)
    add_prediction(store, product, [0.8 if label == other else 0.1 for label in ("Kitchen", "Toys", "Watches")])
    assert ids(store, victor, disagreement="catalogue_vs_predicted") == [product]
    assert ids(store, victor, disagreement="any") == sorted([product, predicted["doll"]])

    evals = ids(store, victor, eval_slice=True)
    in_db = [r["id"] for r in store.query("SELECT id FROM products WHERE split = 'eval' ORDER BY id")]
    assert evals == in_db and evals, "the generated catalogue has an evaluation slice"
    assert ids(store, victor, eval_slice=False) == sorted(set(catalogue_ids + list(predicted.values())) - set(evals))
    for bad in (BrowseFilters(min_confidence=1.5), BrowseFilters(min_confidence=0.9, max_confidence=0.2),
                BrowseFilters(disagreement="loud"), BrowseFilters(limit=0), BrowseFilters(offset=-1)):
        with pytest.raises(InputError):
            search_products(store, victor, bad)


def test_status_and_reviewer_filters_follow_the_settled_view(store, users, predicted):
    rita, bob, victor = users["rita"], users["bob"], users["victor"]
    record_review(store, rita, predicted["skillet"], "accept")
    record_review(store, bob, predicted["doll"], "skip")
    record_review(store, bob, predicted["watch"], "out_of_scope")
    record_feedback(store, victor, predicted["skillet"], correct_label="Toys")  # a viewer's suggestion
    assert ids(store, victor, status="decided") == [predicted["skillet"]]
    assert ids(store, victor, status="skipped") == [predicted["doll"]]
    assert ids(store, victor, status="out_of_scope") == [predicted["watch"]]
    assert ids(store, victor, status="unreviewed") == [predicted["doll"]]
    assert ids(store, victor, status="suggested") == [predicted["skillet"]]
    assert ids(store, victor, reviewer="bob") == [predicted["doll"], predicted["watch"]]
    assert ids(store, victor, reviewer="victor") == []  # suggestions are not decisions

    frame = search_products(store, victor, BrowseFilters())
    row = frame.set_index("product_id").loc[predicted["skillet"]]
    assert (row["label"], row["label_source"], row["reviewer"], row["status"], row["suggestions"]) == (
        "Kitchen", "reviewer", "rita", "decided", 1)
    assert frame.set_index("product_id").loc[predicted["watch"], "label_source"] == "out_of_scope"

    undo_last(store, rita)  # the accept is undone: the product is unreviewed again
    assert ids(store, victor, status="decided") == []
    assert predicted["skillet"] in ids(store, victor, status="unreviewed")
    assert filter_options(store, victor).reviewers == ["bob"]  # rita's only decision was undone


def test_pagination_and_counts(store, users, catalogue_ids):
    victor = users["victor"]
    total = len(catalogue_ids)
    seen = []
    for offset in range(0, total, 5):
        page = search_products(store, victor, BrowseFilters(order="oldest", limit=5, offset=offset))
        assert page.attrs["total"] == total and len(page) == min(5, total - offset)
        seen += page["product_id"].tolist()
    assert seen == catalogue_ids
    assert count_products(store, victor, BrowseFilters(label="Toys", label_kind="catalogue")) == 4
    assert matching_ids(store, victor, BrowseFilters(label="Toys", label_kind="catalogue", limit=1)) == ids(
        store, victor, label="Toys", label_kind="catalogue")
    newest = search_products(store, victor, BrowseFilters(limit=3))["product_id"].tolist()
    assert newest == sorted(catalogue_ids, reverse=True)[:3]
    options = filter_options(store, victor)
    assert options.labels == ["Kitchen", "Toys", "Watches"] and options.sources == ["catalogue:shop"]


def test_product_history_has_every_prediction_decision_and_bulk_action(store, users, predicted):
    rita, bob, victor = users["rita"], users["bob"], users["victor"]
    watch = predicted["watch"]
    add_prediction(store, watch, [0.1, 0.1, 0.8], version="v-two")
    record_feedback(store, victor, watch, correct_label="Toys")
    bulk_id = bulk_accept(store, rita, [watch], 0.5, "test")
    undo_bulk(store, rita, bulk_id)
    record_review(store, bob, watch, "correct", new_label="Toys", note="a toy watch")

    history = product_history(store, victor, watch)
    assert history.product["id"] == watch and history.product["label"] == "Toys"
    assert history.product["label_source"] == "reviewer" and history.product["image_path"] is None
    assert history.predictions["model_version"].tolist() == ["v-test", "v-two"]
    decisions = history.decisions.to_dict("records")
    assert [(d["reviewer"], d["decision"], d["new_label"]) for d in decisions] == [
        ("rita", "accept", "Watches"), ("bob", "correct", "Toys")]
    assert decisions[0]["bulk_id"] == bulk_id and decisions[0]["revoked_by"] == "rita"
    assert pd.isna(decisions[1]["revoked_at"]) and decisions[1]["note"] == "a toy watch"
    assert history.suggestions[["reviewer", "new_label"]].values.tolist() == [["victor", "Toys"]]
    assert history.bulk_actions["bulk_id"].tolist() == [bulk_id]
    assert history.bulk_actions["undone_by"].tolist() == ["rita"]
    assert history.top[0] == ("Watches", 0.8)

    with pytest.raises(InputError, match="no product 9999"):
        product_history(store, victor, 9999)


def test_catalogue_product_history_has_its_photo(store, users, catalogue_ids):
    history = product_history(store, users["victor"], catalogue_ids[0])
    assert history.product["image_path"] is not None and history.product["image_path"].is_file()
    assert history.predictions.empty and history.decisions.empty
    assert history.product["label_source"] == "catalogue"


def test_browsing_needs_a_user(store, users):
    with pytest.raises(PermissionDenied):
        search_products(store, None, BrowseFilters())
    with pytest.raises(PermissionDenied):
        product_history(store, None, 1)
