"""core.training.tree_metrics on small hand-made trees: every expected number below is
worked out by hand in the comments, so a wrong formula fails here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.training.tree_metrics import (
    NONE,
    batch_models,
    calibration,
    hierarchical_prf,
    invalid_path_share,
    level_confidences,
    level_predictions,
    per_level_metrics,
    tree_report,
)

A_B_C = "A >> B >> C"
A_B_D = "A >> B >> D"
A_E = "A >> E"
X_B_C = "X >> B >> C"  # same level names as A_B_C under another root


def test_level_predictions_cut_and_leave_shallow_paths_out():
    paths = [A_B_C, A_E, "A", None]
    assert level_predictions(paths, 1) == ["A", "A", "A", None]
    assert level_predictions(paths, 2) == ["A >> B", A_E, None, None]
    assert level_predictions(paths, 3) == [A_B_C, None, None, None]


def test_per_level_metrics_on_ragged_depths_with_a_shallow_prediction():
    truth = [A_B_C, A_B_D, A_E, X_B_C]
    pred = [A_B_C, "A >> B", A_E, A_B_C]  # row 2 backed off to its parent; row 4 wrong root
    levels = per_level_metrics(truth, pred, 3)
    assert set(levels) == {"level_1", "level_2", "level_3"}
    # level 1: A,A,A,X vs A,A,A,A -> 3/4
    assert levels["level_1"]["n"] == 4 and levels["level_1"]["accuracy"] == 0.75
    # level 2: A>>B, A>>B, A>>E, X>>B vs A>>B, A>>B, A>>E, A>>B -> 3/4; X >> B is its own class
    assert levels["level_2"]["accuracy"] == 0.75
    assert "X >> B" in levels["level_2"]["per_class_f1"]
    assert levels["level_2"]["per_class_f1"]["X >> B"] == 0.0
    # level 3: only rows whose truth reaches level 3 (A_E excluded); the shallow prediction is "(none)"
    l3 = levels["level_3"]
    assert l3["n"] == 3 and l3["accuracy"] == pytest.approx(1 / 3, abs=1e-6)
    assert NONE in l3["confusion_matrix"]["labels"]
    assert NONE not in l3["per_class_f1"]  # a miss, not a class of the macro average
    # A_B_C: tp 1, fp 1 (row 4), fn 0 -> F1 2/3; A_B_D: 0; X_B_C: 0 -> macro 2/9
    assert l3["macro_f1"] == pytest.approx(2 / 9, abs=1e-6)
    json.dumps(levels)


def test_per_level_metrics_can_drop_the_confusion_matrix():
    levels = per_level_metrics([A_B_C, A_E], [A_B_C, A_E], 2, confusion=False)
    assert all("confusion_matrix" not in m for m in levels.values())
    assert levels["level_2"]["accuracy"] == 1.0


def test_hierarchical_prf_hand_computed():
    truth = [A_B_C, A_B_C, A_E, A_B_D]
    pred = [A_B_C, A_B_D, "A", None]
    # row 1: T=P={A, A>>B, A>>B>>C}: hit 3, |P| 3, |T| 3
    # row 2: T={A, A>>B, A>>B>>C}, P={A, A>>B, A>>B>>D}: hit 2, 3, 3
    # row 3: T={A, A>>E}, P={A}: hit 1, 1, 2
    # row 4: no prediction: hit 0, 0, 3
    # hP = 6/7, hR = 6/11, hF = 2·(36/77) / (6/7 + 6/11) = (72/77) / (108/77) = 2/3
    prf = hierarchical_prf(truth, pred)
    assert prf["precision"] == pytest.approx(6 / 7, abs=1e-6)
    assert prf["recall"] == pytest.approx(6 / 11, abs=1e-6)
    assert prf["f1"] == pytest.approx(2 / 3, abs=1e-6)


def test_hierarchical_prf_perfect_and_empty():
    assert hierarchical_prf([A_B_C, A_E], [A_B_C, A_E]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert hierarchical_prf([], []) == {"precision": None, "recall": None, "f1": None}


def test_invalid_path_share_accepts_prefixes_and_refuses_invented_branches():
    valid = [A_B_C, A_B_D, A_E]
    preds = [A_B_C, "A >> B", "A", "A >> E >> C", "X", None]  # 2 invented, None skipped
    assert invalid_path_share(preds, valid) == pytest.approx(2 / 5, abs=1e-6)
    assert invalid_path_share([A_B_C, A_E], valid) == 0.0
    assert invalid_path_share([], valid) == 0.0


def test_ece_is_zero_when_perfectly_calibrated():
    # bin [0.7, 0.8): ten rows at 0.7, 7 right; bin [0.9, 1.0]: ten rows at 0.9, 9 right
    conf = [0.7] * 10 + [0.9] * 10
    correct = [True] * 7 + [False] * 3 + [True] * 9 + [False]
    cal = calibration(conf, correct, bins=10)
    assert cal["ece"] == pytest.approx(0.0, abs=1e-9)
    assert cal["n"] == 20 and len(cal["bins"]) == 10
    filled = [b for b in cal["bins"] if b["n"]]
    assert [(b["lo"], b["n"], b["accuracy"]) for b in filled] == [(0.7, 10, 0.7), (0.9, 10, 0.9)]
    empty = cal["bins"][0]
    assert empty == {"lo": 0.0, "hi": 0.1, "n": 0, "confidence": None, "accuracy": None}
    json.dumps(cal)


def test_ece_of_an_over_confident_model():
    # 20 rows at 0.95 confidence, half right: |0.5 - 0.95| = 0.45, all in the last bin
    # plus 20 rows at 0.55 all right: |1.0 - 0.55| = 0.45 -> ECE 0.45
    cal = calibration([0.95] * 20 + [0.55] * 20, [True, False] * 10 + [True] * 20, bins=10)
    assert cal["ece"] == pytest.approx(0.45, abs=1e-6)
    # a confidence of exactly 1.0 belongs to the last bin, NaN rows are skipped
    cal = calibration([1.0, np.nan], [True, False], bins=4)
    assert cal["n"] == 1 and cal["bins"][-1]["n"] == 1 and cal["ece"] == 0.0
    assert calibration([], [])["ece"] is None


def test_level_confidence_sums_the_mass_under_the_predicted_node():
    labels = [A_B_C, A_B_D, A_E, "X"]
    probs = np.array([[0.4, 0.3, 0.1, 0.2],
                      [0.1, 0.1, 0.1, 0.7],
                      [0.1, 0.1, 0.6, 0.2]])
    nodes, conf = level_confidences(labels, probs, 1)
    assert nodes == ["A", "X", "A"]
    np.testing.assert_allclose(conf, [0.8, 0.7, 0.8])
    nodes, conf = level_confidences(labels, probs, 2)
    assert nodes == ["A >> B", None, A_E]  # "X" has no level 2
    np.testing.assert_allclose(conf, [0.7, np.nan, 0.6])


class _Batch:
    """The shape of core.models.classifier.BatchPrediction, without TensorFlow."""

    def __init__(self, labels, fused, text, image, has_text, has_image):
        self.labels, self.fused, self.text, self.image = labels, fused, text, image
        self.has_text, self.has_image = np.array(has_text), np.array(has_image)


def test_tree_report_from_a_batch_prediction():
    labels = [A_B_C, A_B_D, A_E]
    truth = [A_B_C, A_B_D, A_E, A_B_C]
    fused = np.array([[0.9, 0.05, 0.05],   # right, 0.9
                      [0.6, 0.3, 0.1],     # wrong leaf, right parent
                      [0.1, 0.1, 0.8],     # right
                      [np.nan] * 3])       # neither text nor photo
    text = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0, 0, 0]])
    image = np.array([[0.7, 0.2, 0.1], [0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0, 0, 0]])
    batch = _Batch(labels, fused, text, image, [1, 1, 1, 0], [1, 1, 0, 0])
    report = tree_report(truth, batch_models(batch), valid_paths=labels)
    json.dumps(report)
    assert report["depth"] == 3
    fused_r = report["fused"]
    assert fused_r["n"] == 3  # the row without a prediction is not scored
    assert fused_r["levels"]["level_1"]["accuracy"] == 1.0
    assert fused_r["levels"]["level_2"]["accuracy"] == 1.0
    assert fused_r["levels"]["level_3"]["accuracy"] == pytest.approx(0.5)  # A_E's truth stops at level 2
    assert fused_r["invalid_path_share"] == 0.0
    # level 2 confidence = mass under the node: 0.95 and 0.6 + 0.3 on "A >> B", 0.8 on "A >> E", all right;
    # bin [0.9, 1]: 2 rows, mean 0.925, gap 0.075; bin [0.8, 0.9): gap 0.2 -> ECE (2·0.075 + 0.2) / 3
    l2 = fused_r["levels"]["level_2"]["calibration"]
    assert l2["n"] == 3
    assert l2["ece"] == pytest.approx((2 * 0.075 + 0.2) / 3, abs=1e-6)
    # whole path: 0.9 right, 0.6 wrong, 0.8 right -> |1-0.9| + |0-0.6| + |1-0.8| over 3
    assert fused_r["calibration"]["ece"] == pytest.approx((0.1 + 0.6 + 0.2) / 3, abs=1e-6)
    # the image model only saw rows 1 and 2
    assert report["image"]["n"] == 2
    # disagreement: only row 2 has both and they disagree on the leaf (A_B_D vs A_B_C), not the parent
    dis = report["disagreement"]
    assert dis["rows_with_both"] == 2
    assert dis["path"] == {"n": 1, "confidence": 0.6, "accuracy": 0.0, "gap": 0.6}
    assert dis["level_1"]["n"] == 0 and dis["level_2"]["n"] == 0
    assert dis["level_3"]["n"] == 1


def test_tree_report_counts_a_shallow_prediction_as_a_miss_and_flags_invented_paths():
    labels = ["A >> B", A_B_C, "Z >> Q"]  # a backed-off parent beside its leaf; Z >> Q not in the tree
    truth = [A_B_C, A_B_C]
    probs = np.array([[0.7, 0.3, 0.0], [0.1, 0.2, 0.7]])
    report = tree_report(truth, {"fused": (labels, probs, None)}, valid_paths=[A_B_C])
    fused = report["fused"]
    assert fused["levels"]["level_3"]["accuracy"] == 0.0
    assert fused["levels"]["level_3"]["shallower_predictions"] == 2  # "A >> B" and "Z >> Q" stop at level 2
    assert fused["invalid_path_share"] == 0.5
    assert "disagreement" not in report
