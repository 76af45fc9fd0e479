"""core.explain: explanations checked where the truth is known, offline, on generated data.

- Image: a tiny conv net trained on photos whose class is decided *only* by the colour of
  a square at a random place: every Grad-CAM variant's peak must fall inside the square,
  on the original (non-square) photo, with the backbone nested in a saved-and-loaded model.
  The bundle used for the rest is real EfficientNet-Lite0 (ImageNet weights converted once
  into this module's home) + heads fitted here; keras.applications backbones get a shape
  and finiteness check with random weights.
- Text: a TF-IDF model whose class is decided by one keyword among shared filler words:
  SHAP must rank that keyword first, and base value + values must equal the model output.
- Modality share: an exact split of the fusion's margin.
- Service and CLI: the same numbers as Classifier.predict, the files, the errors.
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.common.errors import InputError

CLASSES = ["Blue", "Green", "Red"]  # sorted, like a bundle's labels
COLOURS = {"Red": (215, 35, 35), "Green": (35, 165, 55), "Blue": (40, 60, 215)}
KEYWORDS = {"Red": "crimson", "Green": "emerald", "Blue": "azure"}
FILLER = ("premium", "quality", "great", "value", "everyday", "use", "new", "classic", "design", "soft",
          "durable", "light", "modern", "gift", "set", "pack", "home", "style", "easy", "clean")


# --------------------------------------------------------------------------- generated data


def square_photo(colour, rng: random.Random, size: tuple[int, int] | None = None):
    """A product photo: a square of `colour` at a random place on white or light grey.
    Returns the image and the square's box (x0, y0, x1, y1), inclusive."""
    w, h = size or rng.choice([(200, 150), (150, 200), (180, 180), (240, 160)])
    background = rng.choice([(255, 255, 255), (232, 232, 232)])
    img = Image.new("RGB", (w, h), background)
    side = int(0.42 * min(w, h))
    x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
    jitter = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in colour)
    ImageDraw.Draw(img).rectangle((x0, y0, x0 + side - 1, y0 + side - 1), fill=jitter)
    return img, (x0, y0, x0 + side - 1, y0 + side - 1)


def keyword_text(label: str, rng: random.Random, n_filler: int = 7) -> str:
    words = rng.sample(FILLER, n_filler)
    words.insert(rng.randint(0, n_filler), KEYWORDS[label])
    return " ".join(words)


@pytest.fixture(scope="module")
def explain_home(tmp_path_factory):
    """One STUDIO_HOME for this module: Lite0 weights are converted once (module scope, so
    the variable does not leak into other test files)."""
    home = tmp_path_factory.mktemp("explain_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def square_bundle(explain_home, tmp_path_factory):
    """A saved bundle: keyword text model + Lite0 image model on coloured squares + fusion."""
    from core.common.images import letterbox
    from core.models.bundle import BundleMetadata
    from core.models.classifier import Classifier
    from core.models.fusion import Fusion
    from core.models.image_model import ImageModel
    from core.models.text_model import TextModel

    rng = random.Random(0)
    order = [i for i in range(len(CLASSES)) for _ in range(14)]
    rng.shuffle(order)
    y = np.array(order)
    photos = [square_photo(COLOURS[CLASSES[i]], rng)[0] for i in y]
    image_model = ImageModel("efficientnet_lite0", num_classes=len(CLASSES), epochs=20)
    emb = np.asarray(image_model.backbone(np.stack([letterbox(p) for p in photos]), training=False))
    image_model.fit(emb, y)
    texts = [keyword_text(CLASSES[i], rng) for i in y]
    text_model = TextModel("tfidf", num_classes=len(CLASSES), epochs=15).fit(texts, y)
    p_text = text_model.predict_proba(texts)
    p_image = image_model.predict_proba_embeddings(emb)
    # soften in-sample probabilities so the fusion is fitted on something like out-of-fold ones
    mix = lambda p: 0.7 * p + 0.1  # noqa: E731
    fusion = Fusion().fit(mix(p_text), mix(p_image), y)
    clf = Classifier(CLASSES, text_model, image_model, fusion,
                     metadata=BundleMetadata(version="test-explain", backbone="efficientnet_lite0", text_arch="tfidf"))
    path = tmp_path_factory.mktemp("bundles") / "squares"
    clf.save(path)
    return path


@pytest.fixture(scope="module")
def loaded(square_bundle):
    from core.models.classifier import Classifier

    return Classifier.load(square_bundle)


@pytest.fixture(scope="module")
def explainer(loaded):
    from core.explain.service import explainer_for

    return explainer_for(loaded)


# --------------------------------------------------------------------------- Grad-CAM


@pytest.fixture(scope="module")
def colour_net(explain_home, tmp_path_factory):
    """A tiny conv net trained end to end on photos whose class is decided *only* by the
    colour of a square: here the truth is known. Saved and loaded, so its backbone is a
    nested layer, as in a bundle. (Lite0 with a head fitted on 42 ImageNet embeddings is
    not a known-truth model: it gets ~90% of fresh squares right and leans on more than
    the square, so it is used below for everything else.)"""
    import keras
    from keras import layers

    from core.common.images import letterbox
    from core.models.tf_setup import seed_everything

    seed_everything(0)
    rng = random.Random(0)
    order = [i for i in range(len(CLASSES)) for _ in range(20)]
    rng.shuffle(order)
    x = np.stack([letterbox(square_photo(COLOURS[CLASSES[i]], rng)[0]) for i in order])
    inputs = keras.Input((224, 224, 3), name="image")
    h = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2D(16, 3, strides=2, padding="same", name="last_conv")(h)
    h = layers.GlobalAveragePooling2D(name="avg_pool")(layers.ReLU(name="last_relu")(h))
    backbone = keras.Model(inputs, h, name="backbone")
    emb = keras.Input((16,), name="embedding")
    head = keras.Model(emb, layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(emb), name="head")
    full = keras.Model(inputs, head(backbone(inputs)), name="image_model")
    full.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    full.fit(x, np.array(order), epochs=25, batch_size=16, verbose=0)
    path = tmp_path_factory.mktemp("colour_net") / "model.keras"
    full.save(path)
    return keras.models.load_model(path)


def test_gradcam_peak_inside_the_square_when_the_truth_is_known(colour_net):
    from core.explain.gradcam import METHODS, GradCam

    gradcam = GradCam(colour_net.get_layer("backbone"), colour_net.get_layer("head"), "last_relu")
    assert gradcam.uses_tail and gradcam.grid_shape == (28, 28)
    rng = random.Random(123)
    for k in range(9):
        label = CLASSES[k % 3]
        img, (x0, y0, x1, y1) = square_photo(COLOURS[label], rng)  # non-square photos too
        feats = gradcam.features(img)
        assert CLASSES[int(np.argmax(feats.probs))] == label
        inside = np.zeros((img.height, img.width), dtype=bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        for method in METHODS:
            result = gradcam.heatmap(feats, CLASSES.index(label), method=method)
            heat = result.heatmap
            assert heat.shape == (img.height, img.width) and heat.dtype == np.float32
            assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
            x, y = result.peak()
            assert x0 <= x <= x1 and y0 <= y <= y1, (method, k, (x, y), (x0, y0, x1, y1))
            assert heat[inside].mean() > 3 * heat[~inside].mean(), method


def dotted(img, box, rng: random.Random):
    """The square patterned: half of its pixels white at random (a printed fabric). On a
    flat square every map is smooth; on a pattern the pixel-level map turns to speckle."""
    x0, y0, x1, y1 = box
    a = np.asarray(img).copy()
    dots = np.random.default_rng(rng.randint(0, 10**6)).random((y1 - y0 + 1, x1 - x0 + 1)) < 0.5
    a[y0:y1 + 1, x0:x1 + 1][dots] = 250
    return Image.fromarray(a)


def test_default_heatmap_is_readable_where_the_old_one_was_speckle(colour_net):
    """On screen the heat must be visible: inside the (patterned) square, the known
    evidence, nearly every pixel above 0.2 and a median well above it, peak inside. The
    pixel-refined map alone (the old default) is speckle there and fails exactly this."""
    from core.explain.gradcam import DEFAULT_METHOD, GradCam, readability

    assert DEFAULT_METHOD == "guided-density"
    gradcam = GradCam(colour_net.get_layer("backbone"), colour_net.get_layer("head"), "last_relu")
    rng = random.Random(321)
    scores: dict[str, list[dict]] = {DEFAULT_METHOD: [], "guided-gradcam": []}
    for k in range(6):
        label = CLASSES[k % 3]
        img, (x0, y0, x1, y1) = square_photo(COLOURS[label], rng)
        feats = gradcam.features(dotted(img, (x0, y0, x1, y1), rng))
        for method, found in scores.items():
            result = gradcam.heatmap(feats, CLASSES.index(label), method=method)
            found.append(readability(result.heatmap[y0:y1 + 1, x0:x1 + 1]))
            if method == DEFAULT_METHOD:
                x, y = result.peak()
                assert x0 <= x <= x1 and y0 <= y <= y1, (k, (x, y), (x0, y0, x1, y1))
    new, old = scores[DEFAULT_METHOD], scores["guided-gradcam"]
    assert min(r["share_above_0.2"] for r in new) >= 0.8 and min(r["median_heat"] for r in new) >= 0.3, new
    assert np.mean([r["share_above_0.2"] for r in old]) < 0.5 and np.mean([r["median_heat"] for r in old]) < 0.2, old


def test_gradcam_on_a_loaded_bundle(loaded, explainer):
    """Lite0 nested in the saved bundle: the naive Keras recipe fails here, ours must not;
    its forward pass gives exactly the bundle's own image probabilities."""
    assert loaded.image_model.backbone.name == "backbone"
    gradcam = explainer.gradcam
    img, _ = square_photo(COLOURS["Red"], random.Random(9), size=(210, 150))
    feats = gradcam.features(img)
    np.testing.assert_allclose(feats.probs, loaded.predict(image=img).image, atol=1e-5)
    for method in ("guided-gradcam", "gradcam", "gradcam++"):
        for c in range(len(CLASSES)):
            heat = gradcam.heatmap(feats, c, method=method).heatmap
            assert heat.shape == (150, 210) and heat.dtype == np.float32 and np.isfinite(heat).all()
            # normalised by its maximum; all zero when no region supports the class
            assert heat.min() >= 0 and (heat.max() == pytest.approx(1.0) or heat.max() == 0)


def test_gradcam_tail_replay_equals_differentiating_through_the_backbone(loaded, explainer):
    """The cheap path (replay pooling + head on cached features) must give exactly the
    map of one GradientTape through the whole (nested, loaded) backbone."""
    from core.explain.gradcam import GradCam

    fast = explainer.gradcam
    slow = GradCam.for_image_model(loaded.image_model, force_full_tape=True)
    img, _ = square_photo(COLOURS["Green"], random.Random(5))
    fast.features(img)  # the first call checks the replay against the backbone's output
    assert fast.uses_tail and not slow.uses_tail
    for method in ("gradcam", "gradcam++"):
        a, b = fast.explain(img, 1, method=method), slow.explain(img, 1, method=method)
        np.testing.assert_allclose(a.grid, b.grid, atol=1e-4)


def test_gradcam_geometry_maps_the_model_grid_back_onto_the_original():
    from core.explain.gradcam import grid_to_image

    grid = np.zeros((7, 7), np.float32)
    grid[3, 0] = 1.0  # left-middle cell of the letterboxed input
    heat = grid_to_image(grid, 300, 150)  # wide photo: padding above and below, none left/right
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert heat.shape == (150, 300)
    assert x < 300 / 7 and abs(y - 75) <= 2  # cell centre (16, 112) in input → (21, 75) in the photo
    assert 0.0 <= heat.min() and heat.max() <= 1.0


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "resnet50", "vgg16"])
def test_gradcam_keras_applications_backbones(name):
    """Random weights (offline): only shape and finiteness are meaningful (PITFALLS)."""
    import keras

    from core.explain.gradcam import GradCam
    from core.models.image_model import ImageModel, build_head

    model = ImageModel(name, num_classes=3, weights=None)
    dim = int(model.backbone.output_shape[-1])
    model.head = build_head(dim, 3, np.random.default_rng(0).normal(size=(6, dim)).astype("float32"))
    full = model.full_model()  # nest the backbone, as in a saved bundle
    nested = ImageModel(name, num_classes=3, weights=None)
    nested._backbone, nested.head = full.get_layer("backbone"), full.get_layer("head")
    assert isinstance(nested.backbone, keras.Model)
    img = Image.new("RGB", (90, 60), (255, 255, 255))
    ImageDraw.Draw(img).ellipse((20, 10, 60, 50), fill=(200, 40, 40))
    gradcam = GradCam.for_image_model(nested)
    feats = gradcam.features(img)
    # the pixel method differentiates through the whole backbone: once is enough (slow to trace)
    for method in ("gradcam", "guided-gradcam") if name == "mobilenet_v2" else ("gradcam",):
        heat = gradcam.heatmap(feats, 0, method=method).heatmap
        assert heat.shape == (60, 90) and np.isfinite(heat).all()
        assert heat.min() >= 0 and heat.max() <= 1


# --------------------------------------------------------------------------- text SHAP


@pytest.fixture(scope="module")
def text_shap(loaded):
    from core.explain.text_shap import TextShap

    return TextShap(loaded.text_model, loaded.labels)


def test_text_shap_ranks_the_deciding_keyword_first(text_shap):
    rng = random.Random(7)
    for label in CLASSES:
        text = keyword_text(label, rng)
        c = CLASSES.index(label)
        r = text_shap.explain(text, c)
        assert r.top(1)[0].token == KEYWORDS[label], (text, [(t.token, round(t.value, 3)) for t in r.tokens])
        assert r.top(1)[0].value > 0
        # additivity, against the model's own output on the text
        out = float(text_shap.predict_proba([text])[0, c])
        assert abs(r.base_value + r.values.sum() - out) <= 1e-4
        assert r.model_output == pytest.approx(out, abs=1e-6)
        # in text order, with offsets into the text
        assert [t.token for t in r.tokens] == text.split()
        assert all(text[t.start:t.end] == t.token for t in r.tokens)


def test_text_shap_budget_and_awkward_text_stay_additive(text_shap):
    from core.explain.text_shap import eval_budget

    long_text = " ".join(random.Random(1).choices(FILLER, k=120) + ["azure"])
    r = text_shap.explain(long_text, 0, max_evals=60)  # far below 2n+1: still additive (Owen values)
    assert r.evals == 60 and len(r.tokens) == 121
    assert r.additivity_error <= 1e-4
    assert eval_budget(10) == 100 and eval_budget(120) == 241 and eval_budget(400) == 300
    # punctuation, repeated spaces, a leading quote and a non-ASCII tail: still exact
    text = '"Azure"  cotton,   soft-touch  design™'
    r = text_shap.explain(text, 0)
    assert r.text == '"Azure" cotton, soft-touch design™'
    out = float(text_shap.predict_proba([r.text])[0, 0])
    assert abs(r.base_value + r.values.sum() - out) <= 1e-4
    assert [t.token for t in r.tokens if t.token] == ["Azure", "cotton", "soft", "touch", "design"]
    assert r.without([1]).lower().count("azure") == 0


# --------------------------------------------------------------------------- modality share


def test_modality_share_is_an_exact_split_of_the_fused_margin():
    from core.explain.modality import modality_share
    from core.models.fusion import Fusion, _softmax

    rng = np.random.default_rng(0)
    labels = ["A", "B", "C", "D"]
    fusion = Fusion(rng.normal(size=(4, 8)), rng.normal(size=4), 1.0)
    p_text, p_image = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
    fused = fusion.predict_proba(p_text[None], p_image[None], np.array([True]), np.array([True]))[0]
    s = modality_share(labels, fusion, p_text, p_image)
    assert s.label == labels[int(np.argmax(fused))] and s.mode == "fusion"
    logits = fusion.logits(p_text[None], p_image[None])[0]
    assert s.margin == pytest.approx(logits[s.class_index] - logits[labels.index(s.versus)])
    assert s.text + s.image + s.bias == pytest.approx(s.margin, abs=1e-9)
    assert s.text_share + s.image_share == pytest.approx(1.0)
    assert np.allclose(_softmax(logits[None])[0], fused, atol=1e-6)
    # a photo-driven case: the text is uninformative, the photo is sure
    fusion = Fusion(np.hstack([np.eye(3), 2 * np.eye(3)]), np.zeros(3), 1.0)
    s = modality_share(["A", "B", "C"], fusion, np.full(3, 1 / 3), np.array([0.02, 0.96, 0.02]))
    assert s.label == "B" and s.decided_by == "photo" and s.image_share == pytest.approx(1.0)
    # the models disagree, the description wins
    s = modality_share(["A", "B", "C"], fusion, np.array([0.001, 0.001, 0.998]), np.array([0.2, 0.5, 0.3]))
    assert s.label == "C" and s.disagree and s.decided_by == "description" and s.image < 0
    assert "disagree" in s.summary
    s = modality_share(["A", "B", "C"], fusion, np.array([0.1, 0.2, 0.7]), None)
    assert s.mode == "text only" and s.text_share == 1.0 and s.decided_by == "description"


def test_modality_caption_for_a_class_that_is_not_the_prediction():
    """Explaining another class than the fused top one (the app lets the user pick any):
    the caption must say it is not the prediction and which model points away from it,
    never "decided by" — and still be right for the predicted class."""
    from core.explain.modality import modality_share
    from core.models.fusion import Fusion

    labels = ["A", "B", "C"]
    fusion = Fusion(np.hstack([np.eye(3), 2 * np.eye(3)]), np.zeros(3), 1.0)
    p_text, p_image = np.array([0.001, 0.001, 0.998]), np.array([0.2, 0.5, 0.3])  # fused top: C
    top = modality_share(labels, fusion, p_text, p_image)
    assert top.label == "C" and top.predicted and top.summary.startswith("Decided by the description")
    assert "is not the prediction" not in top.summary
    # A: both models point away from it
    a = modality_share(labels, fusion, p_text, p_image, labels.index("A"))
    assert not a.predicted and a.versus == "C" and a.margin < 0 and a.text < 0 and a.image < 0
    assert a.summary.startswith("'A' is not the prediction ('C' is)")
    assert "the description and the photo both point away from 'A'" in a.summary
    assert "decided" not in a.summary.lower() and "argued against" not in a.summary
    # B: the photo favours it, the description outweighs the photo
    b = modality_share(labels, fusion, p_text, p_image, labels.index("B"))
    assert not b.predicted and b.image > 0 > b.text
    assert "'B' is not the prediction ('C' is)" in b.summary
    assert "the photo favours it, but the description points away from it more strongly" in b.summary
    assert "the models disagree: description says 'C', photo says 'B'" in b.summary
    assert "decided" not in b.summary.lower()
    # one model alone
    t = modality_share(labels, None, np.array([0.1, 0.2, 0.7]), None, 0)
    assert t.mode == "text only" and not t.predicted
    assert t.summary == "'A' is not the prediction ('C' is): the description alone points away from it."
    # the predicted class won only through the class priors: say so, not "decided by the photo"
    priors = Fusion(np.hstack([np.eye(3), 2 * np.eye(3)]), np.array([9.0, 0.0, 0.0]), 1.0)
    p = modality_share(labels, priors, np.full(3, 1 / 3), np.array([0.2, 0.5, 0.3]))
    assert p.label == "A" and p.predicted and p.image < 0
    assert p.summary.startswith("Decided by the class priors alone for 'A' over 'B'; the photo argued against it")
    # a negligible part (here the description's -0.002) neither supports nor opposes
    p = modality_share(labels, priors, np.array([0.333, 0.3336, 0.3334]), np.array([0.2, 0.5, 0.3]))
    assert -0.01 < p.text < 0
    assert p.summary.startswith("Decided by the class priors alone for 'A' over 'B'; the photo argued against it")
    assert "description argued" not in p.summary and "both argued" not in p.summary


# --------------------------------------------------------------------------- service


def test_explain_matches_predict_and_caches_per_classifier(loaded, explainer):
    from core.explain.service import explain, explainer_for

    assert explainer_for(loaded) is explainer
    rng = random.Random(11)
    img, _ = square_photo(COLOURS["Red"], rng)
    text = keyword_text("Green", rng)  # the two models disagree
    e = explain(loaded, text=text, image=img)
    p = loaded.predict(text=text, image=img)
    np.testing.assert_allclose(e.prediction.fused, p.fused, atol=1e-5)
    np.testing.assert_allclose(e.prediction.text, p.text, atol=1e-5)
    np.testing.assert_allclose(e.prediction.image, p.image, atol=1e-5)
    assert e.label == p.label and e.modality.text_label == "Green"
    assert e.modality.disagree == (e.modality.image_label != "Green") == p.disagree
    assert e.gradcam.class_index == e.class_index == e.text_shap.class_index
    assert set(e.timings) >= {"gradcam", "text_shap", "total"}
    # any class on request
    e2 = explain(loaded, text=text, image=img, class_label="red")
    assert e2.label == "Red" and e2.gradcam.class_index == 2
    with pytest.raises(InputError, match="unknown class 'Purple'"):
        explain(loaded, text=text, image=img, class_label="Purple")
    with pytest.raises(InputError, match="nothing to explain"):
        explain(loaded, text="   ", image=None)
    only_text = explain(loaded, text=text)
    assert only_text.gradcam is None and only_text.modality.mode == "text only"


def test_every_call_honours_its_own_options(loaded, explainer):
    """The explainer is cached per classifier, its options are not: a call with
    method="gradcam" and max_evals=50 after one with the defaults gets exactly those
    (it used to get the defaults of whichever call created the cached explainer)."""
    from core.explain.gradcam import DEFAULT_METHOD
    from core.explain.service import explain, explainer_for

    rng = random.Random(12)
    img, _ = square_photo(COLOURS["Blue"], rng)
    text = keyword_text("Blue", rng)  # 8 words: the default budget is MIN_EVALS (100)
    first = explain(loaded, text=text, image=img, time_budget=None)
    assert first.gradcam.method == DEFAULT_METHOD and first.text_shap.evals == 100
    second = explain(loaded, text=text, image=img, method="gradcam", max_evals=50, time_budget=None)
    assert explainer_for(loaded) is explainer  # the same cached set-up served both
    assert second.gradcam.method == "gradcam" and second.text_shap.evals == 50
    assert second.as_dict()["gradcam"]["method"] == "gradcam"
    plain = explainer.gradcam.explain(img, second.class_index, method="gradcam")
    np.testing.assert_allclose(second.gradcam.heatmap, plain.heatmap, atol=1e-5)
    # and they do not stick either
    third = explain(loaded, text=text, image=img, time_budget=None)
    assert third.gradcam.method == DEFAULT_METHOD and third.text_shap.evals == 100
    with pytest.raises(TypeError):
        explainer_for(loaded, max_evals=50)  # options here were silently ignored once
    with pytest.raises(ValueError, match="unknown Grad-CAM method"):
        explain(loaded, text=text, image=img, method="occlusion")


def test_a_given_prediction_is_explained_without_running_the_model_again(loaded, explainer, monkeypatch):
    """The Predict page scores (and records) the product, then explains it: passing that
    prediction, the model's probabilities are computed once per Predict, and the
    explanation is of the very prediction recorded and shown."""
    from core.explain.service import explain
    from core.models.classifier import Classifier

    rng = random.Random(13)
    img, _ = square_photo(COLOURS["Red"], rng)
    text = keyword_text("Green", rng)
    reference = explain(loaded, text=text, image=img, time_budget=None)  # computes its own prediction
    runs = {"predict": 0, "text": 0, "image": 0}
    predict, text_call, image_call = Classifier.predict, explainer.text_shap._call, explainer.gradcam._forward

    def counted(name, f):
        def call(*args, **kwargs):
            runs[name] += 1
            return f(*args, **kwargs)
        return call

    monkeypatch.setattr(Classifier, "predict", counted("predict", predict))
    monkeypatch.setattr(explainer.text_shap, "_call", counted("text", text_call))
    monkeypatch.setattr(explainer.gradcam, "_forward", counted("image", image_call))
    scored = loaded.predict(text=text, image=img)  # what score_product records
    e = explain(loaded, text=text, image=img, prediction=scored, text_shap=False)
    assert runs == {"predict": 1, "text": 0, "image": 0}
    assert e.prediction is scored and "prediction" not in e.timings
    # the same explanation as one that predicts for itself
    full = explain(loaded, text=text, image=img, prediction=scored, time_budget=None)
    assert full.label == reference.label and full.modality.decided_by == reference.modality.decided_by
    assert (full.modality.text, full.modality.image) == pytest.approx((reference.modality.text,
                                                                       reference.modality.image), abs=1e-4)
    np.testing.assert_allclose(full.gradcam.heatmap, reference.gradcam.heatmap, atol=1e-5)
    np.testing.assert_allclose(full.text_shap.values, reference.text_shap.values, atol=1e-6)
    # plain Grad-CAM needs the conv activations: one forward pass of its own, the same map
    runs.update(image=0)
    plain = explain(loaded, image=img, prediction=loaded.predict(image=img), method="gradcam")
    assert runs["image"] == 1
    np.testing.assert_allclose(plain.gradcam.heatmap, explainer.gradcam.explain(img, plain.class_index,
                                                                                 method="gradcam").heatmap, atol=1e-5)
    # a prediction of another product or model is refused, not explained
    with pytest.raises(ValueError, match="not of this product"):
        explain(loaded, text=text, image=img, prediction=loaded.predict(text=text))
    other = loaded.predict(text=text)
    other.model_version = "another-model"
    with pytest.raises(ValueError, match="another-model"):
        explain(loaded, text=text, prediction=other)


# --------------------------------------------------------------------------- CLI


def _args(*argv: str):
    from core.cli import explain as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["explain", *argv])


def test_cli_writes_every_file(square_bundle, tmp_path, capsys):
    from core.cli import explain as cli
    from core.models.classifier import Classifier

    img, box = square_photo(COLOURS["Blue"], random.Random(3), size=(210, 140))
    img.save(tmp_path / "p.png")
    text = "Zenith azure lamp, soft light for everyday use"
    out = tmp_path / "out"
    assert cli.run(_args("--model", str(square_bundle), "--text", text, "--image", str(tmp_path / "p.png"),
                         "--class", "Blue", "--out", str(out))) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["explained_label"] == "Blue" and summary["label"] in CLASSES
    pred = json.loads((out / "prediction.json").read_text())
    assert set(pred["fused"]) == set(CLASSES) and pred["text"] and pred["image"]
    assert pred["label"] == max(pred["fused"], key=pred["fused"].get) == summary["label"]
    heat = np.load(out / "gradcam.npy")
    assert heat.shape == (140, 210) and heat.dtype == np.float32 and 0 <= heat.min() and heat.max() <= 1
    assert Image.open(out / "gradcam.png").size == (210, 140)
    shap_json = json.loads((out / "text_shap.json").read_text())
    assert [t["token"] for t in shap_json["tokens"]] == ["Zenith", "azure", "lamp", "soft", "light", "for",
                                                         "everyday", "use"]
    total = shap_json["base_value"] + sum(t["value"] for t in shap_json["tokens"])
    assert total == pytest.approx(shap_json["model_output"], abs=1e-4)
    assert max(shap_json["tokens"], key=lambda t: t["value"])["token"] == "azure"
    share = json.loads((out / "modality_share.json").read_text())
    assert share["label"] == "Blue" and share["text_share"] + share["image_share"] == pytest.approx(1)
    assert share["text"] + share["image"] + share["bias"] == pytest.approx(share["margin"])
    # text only, default class, into the same folder: the fused top class; stale image files go
    assert cli.run(_args("--model", str(square_bundle), "--text", text, "--out", str(out))) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label"] == summary["explained_label"] == Classifier.load(square_bundle).predict(text=text).label
    assert json.loads((out / "modality_share.json").read_text())["mode"] == "text only"
    assert not (out / "gradcam.npy").exists() and not (out / "gradcam.png").exists()


def test_cli_method_and_max_evals_hold_with_a_case_folded_class(square_bundle, tmp_path, capsys):
    """`--class blue` (not the label's spelling) makes the explainer before the options are
    read: --method gradcam --max-evals 50 used to be ignored then (guided-density, 300)."""
    from core.cli import explain as cli
    from core.explain.service import explainer_for
    from core.models.classifier import Classifier

    img, _ = square_photo(COLOURS["Blue"], random.Random(4), size=(200, 150))
    img.save(tmp_path / "p.png")
    out = tmp_path / "out"
    assert cli.run(_args("--model", str(square_bundle), "--text", "azure lamp soft light", "--image",
                         str(tmp_path / "p.png"), "--class", "blue", "--method", "gradcam", "--max-evals", "50",
                         "--out", str(out))) == 0
    assert json.loads(capsys.readouterr().out)["explained_label"] == "Blue"
    assert json.loads((out / "text_shap.json").read_text())["evals"] == 50
    expected = explainer_for(Classifier.load(square_bundle)).gradcam.explain(img, CLASSES.index("Blue"),
                                                                              method="gradcam")
    np.testing.assert_allclose(np.load(out / "gradcam.npy"), expected.heatmap, atol=1e-5)


def test_cli_bad_input(square_bundle, tmp_path):
    from core.cli import explain as cli

    model = str(square_bundle)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    cases = {
        "file not found": ["--model", model, "--text", "x", "--image", str(tmp_path / "missing.png")],
        "not an image": ["--model", model, "--text", "x", "--image", str(tmp_path / "broken.jpg")],
        "unknown class 'Purple'": ["--model", model, "--text", "azure lamp", "--class", "Purple"],
        "nothing to explain": ["--model", model, "--text", "  "],
        "not a model bundle": ["--model", str(tmp_path), "--text", "azure lamp"],
    }
    for message, argv in cases.items():
        with pytest.raises(InputError, match=message):
            cli.run(_args(*argv, "--out", str(tmp_path / "o")))


def test_core_cli_explain_one_line_error_exit_2(square_bundle, tmp_path, capsys):
    """Through `python -m core explain`: bad input is one line on stderr and exit status 2."""
    from core.cli import main as core_cli  # the module (its main()), not the function

    code = core_cli.main(["explain", "--model", str(square_bundle), "--text", "azure",
                          "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_the_cli_default_method_is_the_library_default():
    """`explain --method` offers what gradcam offers, with the same default (the CLI does
    not import gradcam at start-up, so the two lists could drift)."""
    from core.cli.parser import build_parser
    from core.explain.gradcam import DEFAULT_METHOD, METHODS

    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    method = next(a for a in explain._actions if a.dest == "method")
    assert tuple(method.choices) == METHODS and method.default == DEFAULT_METHOD
