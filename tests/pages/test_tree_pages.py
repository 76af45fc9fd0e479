"""The app with a category-tree model live (AppTest, a real tiny tree bundle, a real SQLite
file): Predict shows the path level by level and saves a partial correction; Review orders
by one level's confidence and corrects to a node; Models and Monitor read per level."""

from __future__ import annotations

import pytest
from helpers.apptest import button, errors, login, ok, open_page, plotly_keys, store
from helpers.catalogues import write_tree_csv


@pytest.fixture(scope="module")
def tree_bundle(tmp_path_factory):
    """A text-only tree model (Fashion / Home / Kids > 6 leaves), trained once for this module."""
    from core.data.catalogue import load_catalogue
    from core.training.trainer import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("tree_bundle")
    with pytest.MonkeyPatch.context() as patch:  # module-scoped: the function-scoped monkeypatch is not available
        patch.setenv("STUDIO_HOME", str(root / "home"))
        data = write_tree_csv(root / "tree.csv", n_per_leaf=14, seed=1)
        catalogue = load_catalogue(data, text_cols=["title"], label_col="master,sub,article", require_labels=True)
        classifier = Trainer(TrainConfig(folds=3, seed=0), verbose=False).fit(catalogue)
        return classifier.save(root / "bundle")


@pytest.fixture
def tree_home(tmp_path, tree_bundle, monkeypatch):
    from helpers.app_home import build_app_home
    from helpers.studio import cheap_hashes

    cheap_hashes(monkeypatch)
    built = build_app_home(tmp_path / "home", tree_bundle, catalogue_csv=tree_bundle.parent / "tree.csv")
    monkeypatch.setenv("STUDIO_HOME", str(built.home))
    return built


def classify(at, text: str):
    at.text_area(key="predict_text").input(text)
    button(at, "Classify").click()
    return ok(at.run())


def test_predict_shows_the_path_per_level_and_saves_a_partial_correction(tree_home):
    at = open_page(login("rita"), "predict")
    at = classify(at, "chronograph wrist strap watch dial")
    assert errors(at) == []
    assert at.subheader[0].value.startswith("Fashion >> Accessories >> Watches · ")
    text = [m.value for m in at.markdown]
    for k, name in enumerate(["Fashion", "Accessories", "Watches"], start=1):
        assert f"#### {name}" in text and any(t.startswith(f"Level {k} · **") for t in text), text
    assert {"predict_probabilities", "predict_tree"} <= plotly_keys(at)
    pid = store().one("SELECT product_id FROM predictions")["product_id"]
    picker = at.selectbox(key=f"feedback_label_{pid}")
    # every node is offered, the predicted path excepted: a reviewer may stop at any level
    assert "Kids" in picker.options and "Kids >> Play" in picker.options and "Kids >> Play >> Toys" in picker.options
    assert "Fashion >> Accessories >> Watches" not in picker.options
    picker.select("Kids")
    at = ok(at.run())
    at.button(key=f"feedback_correct_{pid}").click()
    at = ok(at.run())
    review = store().one("SELECT decision, old_label, new_label FROM reviews")
    assert review == {"decision": "correct", "old_label": "Fashion >> Accessories >> Watches", "new_label": "Kids"}

    # the next product starts clean, and nothing to classify is a message, not a traceback
    at = classify(at, "")
    assert any("nothing to classify" in e.lower() or "description" in e.lower() for e in errors(at)), errors(at)
    assert store().one("SELECT COUNT(*) AS n FROM reviews")["n"] == 1


def test_review_orders_by_a_level_and_corrects_to_a_node(tree_home):
    from core.models.classifier import Classifier
    from core.studio.auth import User
    from core.studio.scoring import score_product

    classifier = Classifier.load(tree_home.bundle)
    rita = store().one("SELECT id, username, role FROM users WHERE username = 'rita'")
    for text in ("nonstick skillet ladle kettle", "plush doll puzzle blocks", "lipstick serum lotion"):
        score_product(store(), classifier, User(rita["id"], rita["username"], rita["role"]), text=text)
    at = open_page(login("rita"), "review")
    at.segmented_control(key="queue_order").set_value("least_confidence")
    at = ok(at.run())
    level = at.selectbox(key="queue_level")
    assert level.options == ["whole path", "1", "2", "3"]
    level.select(1)
    at = ok(at.run())
    assert errors(at) == []
    shown = store().one("SELECT product_id FROM claims")["product_id"]
    lowest = store().one("SELECT product_id FROM predictions ORDER BY json_extract(level_confidences, '$[0]') "
                         "ASC, confidence ASC, id ASC LIMIT 1")["product_id"]
    assert shown == lowest
    picker = at.selectbox(key=f"review_label_{shown}")
    assert "Home" in picker.options and "Home >> Care" in picker.options
    picker.select("Home")
    button(at, "Save correction").click()
    at = ok(at.run())
    decided = store().one("SELECT product_id, new_label FROM reviews WHERE decision = 'correct'")
    assert decided == {"product_id": shown, "new_label": "Home"}
    assert store().one("SELECT product_id FROM claims")["product_id"] != shown  # the next item, a fresh picker
    assert at.selectbox(key=f"review_label_{store().one('SELECT product_id FROM claims')['product_id']}").value is None


def test_models_and_monitor_read_per_level(tree_home):
    at = open_page(login("admin"), "models")
    assert errors(at) == []
    tables = [d.value for d in at.dataframe if "calibration error (ECE)" in d.value.columns]
    assert len(tables) == 1, [list(d.value.columns) for d in at.dataframe]
    levels = tables[0]
    assert levels["level"].tolist() == [1, 2, 3] and levels["classes"].tolist()[0] == 3
    assert all(0.5 <= a <= 1 for a in levels["accuracy"])
    at = open_page(at, "monitor")
    control = at.segmented_control(key="monitor_level")
    assert control.options == ["whole path", "level 1", "level 2", "level 3"]
    control.set_value(1)
    at = ok(at.run())
    assert errors(at) == [] and "monitor_corrections" in plotly_keys(at)
    assert at.segmented_control(key="monitor_level").value == 1
