"""core.studio.monitor on a real (temporary) store with known rows: exact counts, rates and
windows, and empty frames with the right columns on an empty database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from core.studio import monitor
from core.studio.store import Store, to_json

NOW = datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY, YESTERDAY, OLD = NOW, NOW - timedelta(days=1), NOW - timedelta(days=40)
DAY = lambda t: t.date().isoformat()  # noqa: E731
LABELS = ["Kitchen", "Toys", "Watches"]
P = [0.2, 0.3, 0.5]

# id, product, label, confidence, text?, image?, disagree, when, minute, version
PREDICTIONS = [
    (1, 1, "Kitchen", 0.90, True, True, 0, YESTERDAY, 1, "v1"),
    (2, 2, "Kitchen", 0.60, True, True, 1, YESTERDAY, 2, "v1"),
    (3, 3, "Toys", 0.80, True, False, 1, TODAY, 1, "v2"),  # text only: its disagree flag must not count
    (4, 4, "Watches", 0.40, True, True, 1, TODAY, 2, "v2"),
    (5, 5, "Toys", 0.70, True, True, 0, OLD, 1, "v1"),  # outside a 30-day window
    (6, 1, "Kitchen", 0.95, True, True, 1, TODAY, 3, "v2"),  # product 1 scored again
]
# product, prediction, decision, old_label, new_label
REVIEWS = [
    (1, 1, "accept", "Kitchen", None),
    (2, 2, "correct", "Kitchen", "Toys"),
    (3, 3, "skip", "Toys", None),
    (4, 4, "correct", "Watches", "Kitchen"),
    (5, 5, "accept", "Toys", None),
]


@pytest.fixture
def empty_store(tmp_path) -> Store:
    return Store(tmp_path / "studio.db")


@pytest.fixture
def store(empty_store: Store) -> Store:
    with empty_store.transaction() as db:
        for pid in range(1, 8):  # product 7 never scored (a catalogue row)
            db["products"].insert({"id": pid, "text": f"product {pid}", "source": "test",
                                   "created_at": OLD.isoformat()})
        for id_, pid, label, conf, text, image, disagree, when, minute, version in PREDICTIONS:
            db["predictions"].insert({
                "id": id_, "product_id": pid, "model_version": version, "labels": to_json(LABELS),
                "fused": to_json(P), "text_probs": to_json(P if text else None),
                "image_probs": to_json(P if image else None), "label": label, "confidence": conf,
                "disagree": disagree, "created_at": (when + timedelta(minutes=minute)).isoformat(timespec="milliseconds"),
            })
        for pid, pred, decision, old, new in REVIEWS:
            db["reviews"].insert({"product_id": pid, "prediction_id": pred, "reviewer": "rev", "decision": decision,
                                  "old_label": old, "new_label": new, "created_at": TODAY.isoformat()})
    return empty_store


def test_since_counts_today_as_day_one():
    now = datetime(2025, 3, 31, 23, 59, tzinfo=timezone.utc)
    assert monitor.since(30, now) == "2025-03-02"
    assert monitor.since(1, now) == "2025-03-31"
    assert monitor.since(None, now) is None


def test_predictions_per_day(store):
    frame = monitor.predictions_per_day(store, days=30)
    assert frame.to_dict("records") == [
        {"day": DAY(YESTERDAY), "predictions": 2, "reviewed": 2},
        {"day": DAY(TODAY), "predictions": 3, "reviewed": 2},  # product 3 was only skipped
    ]
    everything = monitor.predictions_per_day(store, days=None)
    assert everything["day"].tolist() == [DAY(OLD), DAY(YESTERDAY), DAY(TODAY)]
    assert everything["predictions"].tolist() == [1, 2, 3] and everything["reviewed"].tolist() == [1, 2, 2]


def test_confidence_values(store):
    frame = monitor.confidence_values(store, days=30)
    assert list(frame.columns) == ["confidence", "label", "model_version"]
    assert frame["confidence"].tolist() == [0.90, 0.60, 0.80, 0.40, 0.95]  # oldest first
    assert frame["label"].tolist() == ["Kitchen", "Kitchen", "Toys", "Watches", "Kitchen"]
    assert frame["model_version"].tolist() == ["v1", "v1", "v2", "v2", "v2"]
    assert len(monitor.confidence_values(store, days=None)) == 6


def test_correction_rate_per_class(store):
    frame = monitor.correction_rate_per_class(store)
    assert frame.to_dict("records") == [
        {"label": "Kitchen", "reviewed": 2, "corrected": 1, "rate": 0.5},
        {"label": "Toys", "reviewed": 1, "corrected": 0, "rate": 0.0},  # the skip is not a review
        {"label": "Watches", "reviewed": 1, "corrected": 1, "rate": 1.0},
    ]


def test_predicted_vs_corrected(store):
    labels, matrix = monitor.predicted_vs_corrected(store)
    assert labels == ["Kitchen", "Toys", "Watches"]
    # rows: final (reviewed) class; columns: predicted class
    assert matrix == [[1, 0, 1],
                      [1, 1, 0],
                      [0, 0, 0]]


def test_disagreement_rate(store):
    frame = monitor.disagreement_rate(store, days=30)
    assert frame.to_dict("records") == [
        {"day": DAY(YESTERDAY), "predictions": 2, "both_models": 2, "disagreements": 1, "rate": 0.5},
        {"day": DAY(TODAY), "predictions": 3, "both_models": 2, "disagreements": 2, "rate": 1.0},
    ]


def test_disagreement_rate_is_nan_without_both_models(empty_store):
    with empty_store.transaction() as db:
        db["products"].insert({"id": 1, "text": "x"})
        db["predictions"].insert({"product_id": 1, "model_version": "v", "labels": "[]", "fused": "[]",
                                  "label": "Toys", "disagree": 0, "created_at": NOW.isoformat()})
    frame = monitor.disagreement_rate(empty_store)
    assert frame["both_models"].tolist() == [0] and frame["rate"].isna().all()


def test_summary(store):
    assert monitor.summary(store) == {
        "predictions": 6, "products": 5, "reviews": 4, "corrections": 2, "skipped": 1, "pending": 1,
        "disagreement_rate": pytest.approx(3 / 5), "correction_rate": pytest.approx(0.5),
    }


def test_class_distribution(store):
    frame = monitor.class_distribution(store, {"Kitchen": 10, "Toys": 30, "Garden": 10}, days=30)
    assert frame["label"].tolist() == ["Garden", "Kitchen", "Toys", "Watches"]
    assert frame["predicted"].tolist() == [0, 3, 1, 1]
    assert frame["predicted_share"].tolist() == pytest.approx([0.0, 0.6, 0.2, 0.2])
    assert frame["training_share"].tolist() == pytest.approx([0.2, 0.2, 0.6, 0.0])
    no_training = monitor.class_distribution(store, {}, days=None)
    assert no_training["predicted"].tolist() == [3, 2, 1] and (no_training["training_share"] == 0).all()


def test_empty_database_gives_empty_frames(empty_store):
    expected = {
        monitor.predictions_per_day: ["day", "predictions", "reviewed"],
        monitor.confidence_values: ["confidence", "label", "model_version"],
        monitor.disagreement_rate: ["day", "predictions", "both_models", "disagreements", "rate"],
    }
    for fn, columns in expected.items():
        frame = fn(empty_store)
        assert isinstance(frame, pd.DataFrame) and frame.empty and list(frame.columns) == columns
    frame = monitor.correction_rate_per_class(empty_store)
    assert frame.empty and list(frame.columns) == ["label", "reviewed", "corrected", "rate"]
    frame = monitor.class_distribution(empty_store, {})
    assert frame.empty and list(frame.columns) == ["label", "predicted", "predicted_share", "training_share"]
    assert monitor.predicted_vs_corrected(empty_store) == ([], [])
    assert monitor.summary(empty_store) == {"predictions": 0, "products": 0, "reviews": 0, "corrections": 0,
                                            "skipped": 0, "pending": 0, "disagreement_rate": None,
                                            "correction_rate": None}


def test_monitor_frames_feed_the_charts(store):
    from pages._ui import charts

    assert len(charts.daily_counts(monitor.predictions_per_day(store)).data) == 2
    assert len(charts.confidence_histogram(monitor.confidence_values(store)).data) == 2  # v1 and v2
    assert list(charts.correction_rate_bars(monitor.correction_rate_per_class(store)).data[0].y)[0] == "Watches"
    assert len(charts.class_distribution(monitor.class_distribution(store, {"Toys": 1})).data) == 2
    assert len(charts.disagreement_rate_line(monitor.disagreement_rate(store)).data) == 1
    labels, matrix = monitor.predicted_vs_corrected(store)
    assert len(charts.confusion_heatmap(labels, matrix, x_title="predicted", y_title="reviewed").data) == 1


def test_a_tree_s_corrections_and_drift_read_per_level(empty_store):
    """Three reviews of a tree model: a fix inside the same department is a correction of the
    path but none at level 1; a fix across departments is one at both; drift sums per node."""
    paths = ["Home >> Bath", "Home >> Bed", "Toys >> Puzzles"]
    with empty_store.transaction() as db:
        for pid, (label, new, decision) in enumerate([("Home >> Bed", "Home >> Bath", "correct"),
                                                      ("Home >> Bed", "Toys >> Puzzles", "correct"),
                                                      ("Toys >> Puzzles", None, "accept")], start=1):
            db["products"].insert({"id": pid, "text": f"p{pid}", "source": "test"})
            db["predictions"].insert({"id": pid, "product_id": pid, "model_version": "v", "labels": to_json(paths),
                                      "fused": to_json([0.2, 0.5, 0.3]), "label": label, "confidence": 0.5,
                                      "created_at": TODAY.isoformat()})
            db["reviews"].insert({"product_id": pid, "prediction_id": pid, "reviewer": "rev", "decision": decision,
                                  "old_label": label, "new_label": new, "created_at": TODAY.isoformat()})
    whole = monitor.correction_rate_per_class(empty_store).set_index("label")
    assert whole.loc["Home >> Bed", "corrected"] == 2 and whole.loc["Home >> Bed", "reviewed"] == 2
    top = monitor.correction_rate_per_class(empty_store, level=1).set_index("label")
    assert top.loc["Home", "corrected"] == 1 and top.loc["Home", "rate"] == 0.5 and top.loc["Toys", "rate"] == 0
    labels, matrix = monitor.predicted_vs_corrected(empty_store, level=1)
    assert labels == ["Home", "Toys"] and matrix == [[1, 0], [1, 1]]  # rows: reviewed; columns: predicted
    drift = monitor.class_distribution(empty_store, {"Home >> Bath": 6, "Toys >> Puzzles": 4}, level=1)
    assert drift.set_index("label")["training_share"].to_dict() == {"Home": 0.6, "Toys": 0.4}
    assert drift.set_index("label")["predicted"].to_dict() == {"Home": 2, "Toys": 1}
