"""core.models.backbones, core.models.embeddings and core.models.image_model with random backbone weights
(weights=None: offline, and the pipeline does not care what the backbone learned)."""

from __future__ import annotations

import random
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers.catalogues import CLASS_SPECS, draw_product

PIPELINE_BACKBONES = ["efficientnet_lite0", "mobilenet_v2"]
CLASSES = ("Watches", "Kitchen", "Toys")


@contextmanager
def counting_decodes():
    """Count the images embed_images decodes for the backbone while the block runs:
    no decoded pixels, no backbone run (the backbone itself may run as a compiled graph,
    where Python-level call counting would see nothing)."""
    import core.models.embeddings

    real = core.models.embeddings.load_model_input
    seen: list[Path] = []

    def spy(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core.models.embeddings, "load_model_input", spy)
        yield seen


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    """Two product shots per class, of different sizes and aspect ratios."""
    root = tmp_path_factory.mktemp("images")
    rng = random.Random(0)
    paths, y = [], []
    for label, name in enumerate(CLASSES):
        for k in range(2):
            path = root / f"{name}_{k}.png"
            draw_product(CLASS_SPECS[name][1], (40 + 17 * k, 30 + 9 * label), rng).save(path)
            paths.append(path)
            y.append(label)
    return paths, np.array(y)


@pytest.fixture(scope="module", params=PIPELINE_BACKBONES)
def pipeline(request, images, tmp_path_factory):
    """An ImageModel on a random backbone, its embeddings (through a fresh cache, with
    the images decoded for the backbone recorded) and a fitted head."""
    from core.models.embeddings import EmbeddingCache
    from core.models.image_model import ImageModel
    from core.models.tf_setup import seed_everything

    seed_everything(0)  # the random backbone is built (lazily) from the global seed
    model = ImageModel(request.param, weights=None, epochs=5, batch_size=4, seed=0)
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")
    paths, y = images
    with counting_decodes() as decoded:
        emb, present = model.embed(paths, cache=cache)
    model.fit(emb, y)
    return {"model": model, "cache": cache, "emb": emb, "present": present,
            "first_decoded": list(decoded), "name": request.param}


def cache_rows(cache) -> list[tuple[str, int]]:
    with sqlite3.connect(cache.path) as db:
        return db.execute("SELECT key, dim FROM embeddings ORDER BY key").fetchall()


def test_embed_fills_the_cache_and_reuses_it(pipeline, images, tmp_path):
    from core.models.backbones import backbone_spec

    model, cache = pipeline["model"], pipeline["cache"]
    paths, _ = images
    dim = backbone_spec(pipeline["name"]).dim
    emb = pipeline["emb"]
    assert emb.shape == (len(paths), dim) and emb.dtype == np.float32
    assert pipeline["present"].all()
    assert np.all(np.isfinite(emb)) and np.abs(emb).sum(axis=1).min() > 0
    assert sorted(pipeline["first_decoded"]) == sorted(paths)  # every image through the backbone once

    rows = cache_rows(cache)
    assert len(rows) == len(paths)
    assert all(key.startswith(model.cache_key + ":") and d == dim for key, d in rows)

    # Second call: everything from the cache, the backbone is not run at all.
    with counting_decodes() as decoded:
        again, present = model.embed(paths, cache=cache)
    assert decoded == []
    assert present.all()
    np.testing.assert_array_equal(again, emb)

    # Absent, missing and undecodable images are "no image" rows (zeros); only the new
    # readable file (a copy of a cached one: same content, same key) is found in the cache.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    copy = tmp_path / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    with counting_decodes() as decoded:
        mixed, present = model.embed([None, tmp_path / "nope.png", broken, copy], cache=cache)
    assert present.tolist() == [False, False, False, True]
    assert not mixed[:3].any()
    np.testing.assert_array_equal(mixed[3], emb[0])
    assert decoded == [broken]  # tried, failed to decode, never reached the backbone
    assert len(cache_rows(cache)) == len(paths)


def test_head_fit_and_predict_proba_shapes(pipeline, images):
    from core.models.embeddings import load_model_input

    model, emb = pipeline["model"], pipeline["emb"]
    paths, _ = images
    probs = model.predict_proba_embeddings(emb)
    assert probs.shape == (len(paths), len(CLASSES)) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert model.num_classes == len(CLASSES)
    assert len(model.history["loss"]) == 5
    assert model.predict_proba_embeddings(emb[:0]).shape == (0, len(CLASSES))

    pixels = np.stack([load_model_input(p) for p in paths[:2]])
    assert pixels.shape == (2, 224, 224, 3)
    from_pixels = model.predict_proba_pixels(pixels)
    np.testing.assert_allclose(from_pixels, probs[:2], atol=1e-5)


def test_full_model_is_head_of_backbone(pipeline):
    model = pipeline["model"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(2, 224, 224, 3)).astype("float32")
    full = model.full_model()
    assert full.get_layer("backbone") is not None and full.get_layer("head") is model.head
    expected = np.asarray(model.head(model.backbone(x, training=False), training=False))
    np.testing.assert_allclose(np.asarray(full(x, training=False)), expected, rtol=1e-5, atol=1e-6)


def test_save_load_round_trip(pipeline, images, tmp_path):
    from core.models.embeddings import load_model_input
    from core.models.image_model import ImageModel

    model = pipeline["model"]
    paths, _ = images
    pixels = np.stack([load_model_input(p) for p in paths])
    before = model.predict_proba_pixels(pixels)
    path = tmp_path / "image_model.keras"
    model.save(path)
    loaded = ImageModel.load(path, backbone=pipeline["name"])
    assert loaded.num_classes == len(CLASSES)
    assert loaded.backbone.name == "backbone"
    assert not loaded.backbone.trainable_weights  # still frozen after a reload
    np.testing.assert_allclose(loaded.predict_proba_pixels(pixels), before, rtol=1e-5, atol=1e-6)
    # Same weights, same cache key: a loaded bundle reuses the training embeddings.
    assert loaded.cache_key == model.cache_key


def test_cache_key_depends_on_backbone_weights():
    from core.models.image_model import ImageModel

    a = ImageModel("mobilenet_v2", weights=None)
    b = ImageModel("mobilenet_v2", weights=None)
    assert a.cache_key.startswith("mobilenet_v2@")
    assert a.cache_key == a.cache_key
    assert a.cache_key != b.cache_key  # two random initialisations


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "vgg16", "resnet50", "efficientnet_lite0"])
def test_backbones_build_offline_with_spec_dim_and_last_conv(name):
    import keras

    from core.models.backbones import IMAGE_SIZE, backbone_spec, build_backbone

    spec = backbone_spec(name)
    model = build_backbone(name, weights=None)
    assert model.name == "backbone"
    assert not model.trainable_weights and model.non_trainable_weights  # frozen
    assert model.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert model.output_shape == (None, spec.dim)
    conv = model.get_layer(spec.last_conv)  # raises ValueError if it is not there
    # Grad-CAM's sub-model: the flat backbone makes the last conv reachable from the input.
    feature_map = keras.Model(model.inputs[0], conv.output)
    x = np.full((1, IMAGE_SIZE, IMAGE_SIZE, 3), 128.0, dtype="float32")
    out = np.asarray(model(x, training=False))
    assert out.shape == (1, spec.dim) and np.all(np.isfinite(out))
    fmap = np.asarray(feature_map(x, training=False))
    assert fmap.ndim == 4 and fmap.shape[-1] == spec.dim
    if name == "vgg16":  # block5_pool (2×2 max) sits between VGG's last conv and the average
        h, w = fmap.shape[1:3]
        fmap = fmap.reshape(1, h // 2, 2, w // 2, 2, -1).max(axis=(2, 4))
    # the embedding is the global average of this map: last_conv really is the last one
    np.testing.assert_allclose(fmap.mean(axis=(1, 2)), out, rtol=1e-4, atol=1e-6)


def test_unknown_backbone_raises():
    from core.models.backbones import backbone_spec, build_backbone

    with pytest.raises(ValueError, match="unknown backbone 'alexnet'.*efficientnet_lite0"):
        backbone_spec("alexnet")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("alexnet", weights=None)
