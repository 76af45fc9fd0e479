"""core.studio.export on a real SQLite file: the labelled dataset (effective label and where it
came from, photo path, evaluation slice), the decision log with undone decisions, and
CSV / Parquet files written atomically with formula cells defused."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
from helpers.studio import add_predicted_product, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied
from core.studio.bulk import bulk_accept, undo_bulk
from core.studio.export import decision_log, labelled_dataset, table_bytes, write_table
from core.studio.review_queue import record_feedback, record_review


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rita", "reviewer"), ("victor", "viewer"))


@pytest.fixture
def catalogue(store, users, make_catalogue, tmp_path):
    from core.data.catalogue import load_catalogue
    from core.studio.labels import import_catalogue

    cat = make_catalogue(tmp_path / "cat", n_per_class=4, classes=("Kitchen", "Toys", "Watches"))
    import_catalogue(store, users["admin"], load_catalogue(cat.csv_path, **cat.load_kwargs), "shop")
    return cat


def test_dataset_after_a_correction_names_the_reviewer_as_source(store, users, catalogue, studio_home):
    rita = users["rita"]
    rows = store.query("SELECT id, true_label, split FROM products ORDER BY id")
    corrected, out_of_scope = rows[0], rows[1]
    new_label = next(label for label in ("Kitchen", "Toys", "Watches") if label != corrected["true_label"])
    record_review(store, rita, corrected["id"], "correct", new_label=new_label, note="the photo shows it")
    record_review(store, rita, out_of_scope["id"], "out_of_scope")

    frame = labelled_dataset(store, rita).set_index("product_id")
    assert len(frame) == len(rows)  # one row per product
    assert (frame.loc[corrected["id"], "label"], frame.loc[corrected["id"], "label_source"]) == (new_label, "reviewer")
    assert frame.loc[corrected["id"], "reviewer"] == "rita"
    assert (frame.loc[out_of_scope["id"], "label"], frame.loc[out_of_scope["id"], "label_source"]) == (
        "", "out_of_scope")
    untouched = rows[2]
    assert (frame.loc[untouched["id"], "label"], frame.loc[untouched["id"], "label_source"]) == (
        untouched["true_label"], "catalogue")
    assert frame["eval_slice"].tolist() == [r["split"] == "eval" for r in rows]
    assert frame["eval_slice"].any(), "the catalogue has an evaluation slice"
    for path in frame["image_path"]:
        assert path.startswith("data/images/") and (studio_home / path).is_file()
    assert list(frame.reset_index().columns[:7]) == ["product_id", "external_id", "text", "image_path", "label",
                                                     "label_source", "eval_slice"]

    # undoing the correction brings the catalogue label back
    from core.studio.review_queue import undo_last

    undo_last(store, rita)  # the out-of-scope decision
    undo_last(store, rita)  # the correction
    frame = labelled_dataset(store, rita).set_index("product_id")
    assert frame.loc[corrected["id"], "label_source"] == "catalogue"
    assert frame.loc[out_of_scope["id"], "label"] == out_of_scope["true_label"]


def test_a_suggestion_labels_only_a_product_with_no_other_label(store, users):
    rita, victor = users["rita"], users["victor"]
    upload, _ = add_predicted_product(store, [0.7, 0.2, 0.1], text="a viewer's upload", created_by="victor")
    unlabelled, _ = add_predicted_product(store, [0.7, 0.2, 0.1], text="nobody said anything")
    record_feedback(store, victor, upload, correct_label="Toys")
    frame = labelled_dataset(store, rita).set_index("product_id")
    assert unlabelled not in frame.index  # no label from anyone: not in the labelled dataset
    assert (frame.loc[upload, "label"], frame.loc[upload, "label_source"], frame.loc[upload, "reviewer"]) == (
        "Toys", "suggestion", "victor")
    assert frame.loc[upload, "image_path"] == ""
    record_review(store, rita, upload, "accept")  # a reviewer decides: the decision wins
    frame = labelled_dataset(store, rita).set_index("product_id")
    assert (frame.loc[upload, "label"], frame.loc[upload, "label_source"]) == ("Kitchen", "reviewer")


def test_decision_log_keeps_undone_decisions_with_who_and_when(store, users):
    rita, victor = users["rita"], users["victor"]
    product, _ = add_predicted_product(store, [0.9, 0.05, 0.05], created_by="victor")
    record_feedback(store, victor, product, correct_label="Watches")
    bulk_id = bulk_accept(store, rita, [product], 0.5, "all")
    undo_bulk(store, rita, bulk_id)
    record_review(store, rita, product, "correct", new_label="Toys", note="looked again")
    log = decision_log(store, rita)
    assert log[["decision", "reviewer", "new_label"]].values.tolist() == [
        ["suggest", "victor", "Watches"], ["accept", "rita", "Kitchen"], ["correct", "rita", "Toys"]]
    assert log["bulk_id"].tolist()[1] == bulk_id and pd.isna(log["bulk_id"].tolist()[2])
    assert log["revoked_by"].tolist()[1] == "rita" and pd.isna(log["revoked_at"].tolist()[2])
    assert log["created_at"].notna().all() and log["note"].tolist()[2] == "looked again"


def test_csv_and_parquet_round_trip_and_formulas_are_defused(tmp_path):
    frame = pd.DataFrame({"product_id": [1, 2, 3], "text": ["=HYPERLINK(\"http://x\")", "+1 cm", "plain"],
                          "label": ["@SUM(A1)", "-minus", "Toys"], "confidence": [-0.5, 0.25, 1.0],
                          "eval_slice": [True, False, True]})
    csv_path = write_table(frame, tmp_path / "out" / "data.csv")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["text"] for r in rows] == ["'=HYPERLINK(\"http://x\")", "'+1 cm", "plain"]
    assert [r["label"] for r in rows] == ["'@SUM(A1)", "'-minus", "Toys"]
    assert [r["confidence"] for r in rows] == ["-0.5", "0.25", "1.0"]  # numbers stay numbers

    parquet_path = write_table(frame, tmp_path / "data.PARQUET")
    back = pd.read_parquet(parquet_path)
    pd.testing.assert_frame_equal(back, frame)  # Parquet is typed: nothing to defuse
    assert table_bytes(frame, "csv") == csv_path.read_bytes()


def test_bad_targets_and_a_failed_write_leave_the_old_file(tmp_path):
    frame = pd.DataFrame({"a": [1]})
    with pytest.raises(InputError, match="unknown extension '.xlsx'"):
        write_table(frame, tmp_path / "data.xlsx")
    with pytest.raises(InputError, match="unknown extension"):
        write_table(frame, tmp_path / "data")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_table(frame, tmp_path / "folder.csv")
    target = tmp_path / "keep.parquet"
    target.write_bytes(b"the previous export")
    with pytest.raises(Exception):
        write_table(pd.DataFrame({"mixed": [1, "a"]}), target)  # pyarrow cannot type this column
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv", "keep.parquet"]  # no temp file left


def test_viewers_cannot_export(store, users):
    with pytest.raises(PermissionDenied):
        labelled_dataset(store, users["victor"])
    with pytest.raises(PermissionDenied):
        decision_log(store, users["victor"])
