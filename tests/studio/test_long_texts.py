"""Issue 10 item 4: long texts never stall others.

- One cap (`core.common.text.MAX_TEXT_CHARS`) for every text that enters: Predict refuses a longer
  one; catalogue import and batch scoring cut the row and say so; an explanation explains
  the cut text and says so.
- SHAP gives a value to the first MAX_SHAP_WORDS words one by one, the rest of the text
  is one part: still additive against the model's output on the whole text.
- An explanation takes the model's lock per model batch, not for the whole explanation:
  another user's prediction completes while a long (artificially slow) explanation runs.
- A time budget: past it, a coarse explanation (a few stretches of the text) is returned.

The model is the session's tiny real bundle (tests/app_home.py); the slow model is the
real one with a sleep added to each SHAP model call (inside the lock, like a slow model).
The 20k-word contention figures are in bench/bench_contention.py."""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np
import pytest

WORDS = ("steel", "ceramic", "mug", "dial", "strap", "plush", "bear", "puzzle", "pan", "analog", "soft", "gift")


def long_text(n_words: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=n_words))


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    from core.models.classifier import Classifier

    return Classifier.load(tiny_bundle)


def write_csv(path: Path, texts: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["title", "category"])
        for i, text in enumerate(texts):
            writer.writerow([text, ("Kitchen", "Toys", "Watches")[i % 3]])
    return path


def test_one_cap_for_import_batch_predict_and_explain(tmp_path, studio_home, classifier):
    import core.studio.scoring
    from core.common.errors import InputError
    from core.common.text import MAX_TEXT_CHARS
    from core.data.catalogue import load_catalogue
    from core.explain.service import ProductExplainer
    from core.studio.auth import User
    from core.studio.batch import score_batch
    from core.studio.labels import import_catalogue
    from core.studio.store import Store

    assert core.studio.scoring.MAX_TEXT_CHARS is MAX_TEXT_CHARS  # one constant
    huge = long_text(6000)  # ~36k characters
    assert len(huge) > MAX_TEXT_CHARS * 1.5
    with pytest.raises(InputError, match="too long"):  # a person typed it: refused, clearly
        core.studio.scoring.clean_text(huge)

    store = Store()
    csv_path = write_csv(tmp_path / "import.csv", ["steel mug", huge + " kitchen", "plush bear"])
    catalogue = load_catalogue(csv_path, text_cols=["title"], label_col="category")
    summary = import_catalogue(store, User.system("test"), catalogue, "long")
    assert summary.added == 3 and summary.cut_texts == [2]
    assert "cut" in summary.line() and any("cut" in note and "row" in note for note in catalogue.report.notes)
    lengths = [r["n"] for r in store.query("SELECT length(text) AS n FROM products ORDER BY id")]
    assert max(lengths) <= MAX_TEXT_CHARS and lengths[1] > MAX_TEXT_CHARS - 200

    csv_path = write_csv(tmp_path / "batch.csv", ["dial strap", huge + " toys"])
    batch = load_catalogue(csv_path, text_cols=["title"])
    result = score_batch(store, classifier, User.system("test"), batch)
    assert result.scored == 2
    assert result.frame["status"].tolist()[0] == "scored" and "cut" in result.frame["status"].tolist()[1]
    stored = store.one("SELECT length(text) AS n FROM products WHERE source LIKE 'batch:%' ORDER BY id DESC LIMIT 1")
    assert stored["n"] <= MAX_TEXT_CHARS

    explanation = ProductExplainer(classifier).explain(text=huge, gradcam=False, time_budget=0)  # coarse: fast
    assert len(explanation.text_shap.text) <= MAX_TEXT_CHARS
    assert any("longer than" in note for note in explanation.notes)
    assert explanation.as_dict()["notes"] == explanation.notes


def test_shap_values_words_one_by_one_up_to_the_cap_then_the_rest_as_one_part(classifier):
    from core.explain.text_shap import MAX_SHAP_WORDS, TextShap

    shap = TextShap(classifier.text_model, classifier.labels, time_budget=None)
    text = long_text(MAX_SHAP_WORDS + 400, seed=1)
    r = shap.explain(text, 0)
    assert len(r.tokens) == MAX_SHAP_WORDS + 1 and r.words == MAX_SHAP_WORDS + 400
    assert r.words_explained == MAX_SHAP_WORDS and not r.coarse
    assert f"first {MAX_SHAP_WORDS}" in r.note and r.as_dict()["note"] == r.note
    assert [t.token for t in r.tokens[:-1]] == text.split()[:MAX_SHAP_WORDS]
    assert r.tokens[-1].token == " ".join(text.split()[MAX_SHAP_WORDS:])  # the rest of the text, one part
    assert all(r.text[t.start:t.end] == t.token for t in r.tokens)
    # additive against the model's output on the *whole* text
    whole = float(shap.predict_proba([text])[0, 0])
    assert abs(r.base_value + r.values.sum() - whole) <= 1e-4
    # a short text: every word has its own value and nothing is said
    short = shap.explain("steel mug with a dial", 0)
    assert len(short.tokens) == 5 and short.note == "" and short.words_explained == 5


def test_time_budget_gives_a_coarse_additive_explanation(classifier):
    from core.explain.text_shap import COARSE_PARTS, TextShap

    shap = TextShap(classifier.text_model, classifier.labels)
    text = long_text(500, seed=2)
    r = shap.explain(text, 1, time_budget=0.0)
    assert r.coarse and 1 < len(r.tokens) <= COARSE_PARTS and "time limit" in r.note
    assert "".join(r.segments) == text and all(r.text[t.start:t.end] == t.token for t in r.tokens)
    assert abs(r.base_value + r.values.sum() - float(shap.predict_proba([text])[0, 1])) <= 1e-4


def slow_shap_calls(explainer, seconds: float) -> threading.Event:
    """Make every SHAP model call of `explainer` take `seconds` longer (inside the model
    lock, like a slow model); the returned event is set at the first such call."""
    shap = explainer.text_shap
    real_call, started = shap._call, threading.Event()

    def slow(batch):
        started.set()
        time.sleep(seconds)
        return real_call(batch)

    shap._call = slow
    return started


def test_another_prediction_does_not_wait_for_a_long_explanation(classifier):
    from core.explain.service import ProductExplainer

    explainer = ProductExplainer(classifier)
    explainer.time_budget = None  # the whole word-by-word explanation, however slow
    classifier.predict(text="warm up")  # traced once, outside the measurement
    shap_started = slow_shap_calls(explainer, 0.5)
    text = long_text(1000, seed=3)
    done: dict[str, float] = {}

    def explain() -> None:
        explainer.explain(text=text, gradcam=False)
        done["explanation"] = time.perf_counter()

    thread = threading.Thread(target=explain)
    began = time.perf_counter()
    thread.start()
    assert shap_started.wait(30)
    asked = time.perf_counter()
    prediction = classifier.predict(text="steel mug ceramic")
    waited = time.perf_counter() - asked
    predicted = time.perf_counter()
    thread.join(120)
    assert prediction.label in classifier.labels
    assert done["explanation"] - began > 2.5  # a long explanation (≥ 6 slow model calls) …
    assert predicted < done["explanation"]  # … still running when the prediction was answered
    assert waited < 2.0, f"the prediction waited {waited:.1f} s for the explanation"


def test_explanation_time_budget_returns_a_coarse_explanation_in_time(classifier):
    from core.explain.service import ProductExplainer

    explainer = ProductExplainer(classifier, time_budget=1.0)
    slow_shap_calls(explainer, 0.3)
    explainer.text_shap.batch_size = 8  # word by word: 300 evaluations = ~38 slow calls (> 11 s)
    started = time.perf_counter()
    e = explainer.explain(text=long_text(800, seed=4), gradcam=False)
    took = time.perf_counter() - started
    assert e.text_shap.coarse and any("time limit" in note for note in e.notes)
    assert e.text_shap.evals <= 17  # 8 parts, each split off once
    # the budget, the call in flight, then a few coarse calls and the additivity check
    assert took < 1.0 + 8 * 0.3, f"took {took:.1f} s"
