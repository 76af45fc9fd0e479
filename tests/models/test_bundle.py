"""core.models.bundle (atomic bundle directories), and a bundle end to end: Trainer → Classifier
→ save → load → predict, on a generated catalogue with a random backbone (weights=None)."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from helpers.catalogues import write_catalogue
from PIL import Image

from core.common.errors import InputError
from core.models import bundle
from core.models.bundle import atomic_directory, is_bundle

# --------------------------------------------------------------------------- atomic_directory


def leftovers(parent: Path, name: str) -> list[str]:
    """Temporary or set-aside siblings atomic_directory may have left behind."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def make_old_bundle(target: Path) -> None:
    target.mkdir(parents=True)
    (target / bundle.METADATA).write_text('{"version": "old"}')
    (target / bundle.LABELS).write_text('["a", "b"]')
    (target / "only_in_old.txt").write_text("old")


def test_atomic_directory_replaces_the_old_bundle_on_success(tmp_path):
    target = tmp_path / "models" / "m"
    make_old_bundle(target)
    with atomic_directory(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and tmp.is_dir()
        assert not any(tmp.iterdir())
        (tmp / bundle.METADATA).write_text('{"version": "new"}')
        (tmp / bundle.LABELS).write_text('["a", "b", "c"]')
        # until the body is done, readers still see the complete old bundle
        assert bundle.read_metadata(target).version == "old"
    assert bundle.read_metadata(target).version == "new"
    assert not (target / "only_in_old.txt").exists()
    assert is_bundle(target)
    assert leftovers(target.parent, "m") == []
    assert sorted(p.name for p in target.parent.iterdir()) == ["m"]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_directory_keeps_the_old_bundle_when_the_body_raises(tmp_path, exc):
    target = tmp_path / "m"
    make_old_bundle(target)
    with pytest.raises(type(exc)):
        with atomic_directory(target) as tmp:
            (tmp / bundle.METADATA).write_text('{"version": "half"}')
            raise exc
    assert bundle.read_metadata(target).version == "old"
    assert (target / "only_in_old.txt").read_text() == "old"
    assert leftovers(tmp_path, "m") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_atomic_directory_creates_a_new_target_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "deep" / "er" / "m"
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "x").write_text("x")
            raise ValueError("boom")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("y")
    assert (target / "x").read_text() == "y"
    assert [p.name for p in target.parent.iterdir()] == ["m"]


def test_is_bundle_needs_metadata_and_labels(tmp_path):
    assert not is_bundle(tmp_path / "nope")
    (tmp_path / bundle.METADATA).write_text("{}")
    assert not is_bundle(tmp_path)
    (tmp_path / bundle.LABELS).write_text("[]")
    assert is_bundle(tmp_path)


# --------------------------------------------------------------------------- manifest


def test_atomic_save_writes_a_manifest_of_every_file_last(tmp_path):
    target = tmp_path / "m"
    with atomic_directory(target) as tmp:
        (tmp / bundle.METADATA).write_text('{"version": "v"}')
        (tmp / bundle.LABELS).write_text('["a"]')
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"\x00" * 10)
        assert not (tmp / bundle.MANIFEST).exists()  # written after the body, not before
    manifest = json.loads((target / bundle.MANIFEST).read_text())
    assert sorted(manifest["files"]) == [bundle.LABELS, bundle.METADATA, "sub/w.bin"]
    assert manifest["files"]["sub/w.bin"] == "01d448afd928065458cf670b60f5a594d735af0172c8d67f22a81680132681ca"
    assert bundle.verify_bundle(target) is True


@pytest.mark.parametrize("damage, says", [
    (lambda d: (d / bundle.LABELS).write_text('["a", "evil"]'), "labels.json changed since it was saved"),
    (lambda d: (d / "sub" / "w.bin").unlink(), "sub/w.bin is missing"),
    (lambda d: (d / "text_model.keras").write_bytes(b"planted"), "text_model.keras is not part of the saved bundle"),
    (lambda d: (d / bundle.MANIFEST).write_text("{half"), "unreadable manifest.json"),
], ids=["changed", "half-written", "added", "manifest"])
def test_verify_refuses_a_damaged_or_tampered_bundle(tmp_path, damage, says):
    target = tmp_path / "m"
    with atomic_directory(target) as tmp:
        (tmp / bundle.METADATA).write_text('{"version": "v"}')
        (tmp / bundle.LABELS).write_text('["a"]')
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"w")
    damage(target)
    with pytest.raises(bundle.BundleError, match=re.escape(says)):
        bundle.verify_bundle(target)


def test_a_bundle_without_a_manifest_is_unverified_not_refused(tmp_path):
    make_old_bundle(tmp_path / "m")
    assert bundle.verify_bundle(tmp_path / "m") is False


# --------------------------------------------------------------------------- trained bundle


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One STUDIO_HOME (embedding cache, models) for the module's trained bundle."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("studio_home")
        mp.setenv("STUDIO_HOME", str(path))
        yield path


# Seven rows per class at least: see test_classes_smaller_than_the_validation_folds.
N_PER_CLASS = 7


@pytest.fixture(scope="module")
def cat(home):
    return write_catalogue(home / "catalogue", n_per_class=N_PER_CLASS, missing_images=1, seed=3)


@pytest.fixture(scope="module")
def trained(home, cat):
    from core.data.catalogue import load_catalogue
    from core.models.tf_setup import seed_everything
    from core.training.trainer import TrainConfig, Trainer

    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    seed_everything(0)  # TrainConfig.seed does not cover the random backbone's initialisation
    progress: list[tuple[str, float]] = []
    config = TrainConfig(weights=None, folds=2, text_epochs=6, image_epochs=10, seed=0)
    classifier = Trainer(config, verbose=False, on_progress=lambda s, f: progress.append((s, f))).fit(catalogue)
    path = classifier.save(home / "models" / "m")
    return {"classifier": classifier, "path": path, "catalogue": catalogue, "progress": progress}


@pytest.fixture(scope="module")
def loaded(trained):
    from core.models.classifier import Classifier

    return Classifier.load(trained["path"])


def image_of(cat, row: int) -> Path:
    return cat.image_dir / cat.rows[row - 1]["image"]


def both_rows(cat) -> list[int]:
    return [r for r in range(1, len(cat.rows) + 1) if r not in cat.missing_rows]


def test_bundle_files_and_metadata(trained, loaded, cat):
    from core.training.trainer import data_fingerprint

    path, classifier = trained["path"], trained["classifier"]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [bundle.METADATA, bundle.LABELS, bundle.TEXT_MODEL, bundle.IMAGE_MODEL, bundle.FUSION, bundle.TREE,
             bundle.MANIFEST])
    assert loaded.verified is True
    assert leftovers(path.parent, path.name) == []
    assert json.loads((path / bundle.LABELS).read_text()) == cat.classes == loaded.labels

    md = bundle.read_metadata(path)
    assert md.to_dict() == json.loads(json.dumps(classifier.metadata.to_dict(), default=str))
    assert json.loads((path / bundle.METADATA).read_text())["format"] == bundle.FORMAT_VERSION == md.format
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", md.version) and loaded.version == md.version
    assert loaded.metadata == md
    assert datetime.fromisoformat(md.created_at).tzinfo is not None
    catalogue = trained["catalogue"]
    assert md.data_fingerprint == data_fingerprint(catalogue.texts, catalogue.labels, catalogue.image_paths)
    assert re.fullmatch(r"[0-9a-f]{16}", md.data_fingerprint)
    rows = md.rows
    n = len(cat.rows)
    assert rows["catalogue"] == rows["used"] == n
    assert rows["train"] + rows["validation"] == n and rows["validation"] > 0
    assert rows["with_text"] == n and rows["with_image"] == n - len(cat.missing_rows)
    assert rows["per_class"] == {c: N_PER_CLASS for c in cat.classes}
    for part in ("fused", "text", "image"):
        m = md.split_metrics("validation", part)
        assert m["n"] > 0 and 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
    assert md.split_metrics()["n"] == rows["validation"]
    assert md.backbone == "efficientnet_lite0" and md.text_arch == "tfidf"
    assert md.config["weights"] is None and md.config["folds"] == 2
    assert md.fusion["kind"] in ("pool", "stacked_logistic_regression", "shared_pool") and loaded.fusion.fitted
    assert {"python", "keras", "numpy", "scikit-learn"} <= set(md.packages)
    assert "tensorflow" in md.packages or "tensorflow-cpu" in md.packages

    stages = [s for s, _ in trained["progress"]]
    assert stages[0] == "image embeddings" and trained["progress"][-1] == ("done", 1.0)
    fractions = [f for _, f in trained["progress"]]
    assert fractions == sorted(fractions)


def test_predictions_identical_after_load(trained, loaded, cat):
    classifier = trained["classifier"]
    for row in both_rows(cat)[:4]:
        text, image = cat.texts[row - 1], image_of(cat, row)
        before = classifier.predict(text=text, image=image)
        after = loaded.predict(text=text, image=image)
        for which in ("fused", "text", "image"):
            assert getattr(before, which) is not None
            np.testing.assert_allclose(getattr(after, which), getattr(before, which), rtol=1e-5, atol=1e-6)
        assert after.label == before.label and after.labels == cat.classes
        np.testing.assert_allclose(after.fused.sum(), 1.0, atol=1e-5)
        assert after.model_version == loaded.version


def test_text_learns_the_catalogue(loaded, cat):
    hits = [loaded.predict(text=t).text_label == label for t, label in zip(cat.texts, cat.labels)]
    assert np.mean(hits) >= 0.9


def test_text_only_and_image_only_predictions(loaded, cat):
    row = both_rows(cat)[0]
    text_only = loaded.predict(text=cat.texts[row - 1])
    assert text_only.image is None and text_only.image_label is None and not text_only.disagree
    np.testing.assert_array_equal(text_only.fused, text_only.text)

    image_only = loaded.predict(image=image_of(cat, row))
    assert image_only.text is None and image_only.text_label is None
    np.testing.assert_array_equal(image_only.fused, image_only.image)
    assert image_only.label == image_only.image_label

    both = loaded.predict(text=cat.texts[row - 1], image=image_of(cat, row))
    np.testing.assert_allclose(both.text, text_only.text, atol=1e-6)
    np.testing.assert_allclose(both.image, image_only.image, atol=1e-6)
    d = both.as_dict()
    assert set(d["fused"]) == set(cat.classes) and d["label"] == both.label
    assert both.top(2)[0] == (both.label, pytest.approx(both.confidence))


def test_image_sources_agree(loaded, cat):
    path = image_of(cat, both_rows(cat)[0])
    expected = loaded.predict(image=path).image
    data = path.read_bytes()
    for source in (str(path), data, io.BytesIO(data), Image.open(io.BytesIO(data)).convert("RGB")):
        np.testing.assert_allclose(loaded.predict(image=source).image, expected, atol=1e-6)


def test_nothing_to_classify_and_bad_images_raise_input_error(loaded, tmp_path):
    for kwargs in ({}, {"text": ""}, {"text": "   \n "}, {"text": None, "image": None}):
        with pytest.raises(InputError, match="nothing to classify"):
            loaded.predict(**kwargs)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    with pytest.raises(InputError, match="not an image"):
        loaded.predict(text="a watch", image=bad)
    with pytest.raises(InputError, match="file not found"):
        loaded.predict(text="a watch", image=tmp_path / "missing.png")


def test_predict_batch_matches_predict(loaded, cat, home):
    texts = list(cat.texts[:5]) + ["", ""]
    paths = [cat.image_dir / r["image"] for r in cat.rows[:5]] + [image_of(cat, both_rows(cat)[0]), None]
    batch = loaded.predict_batch(texts, paths)
    assert batch.fused.shape == (7, len(cat.classes))
    for i in range(7):
        exists = paths[i] is not None and paths[i].is_file()
        assert batch.has_image[i] == exists and batch.has_text[i] == bool(texts[i])
        if not (exists or texts[i]):
            assert np.isnan(batch.fused[i]).all() and batch.row(i).fused is None
            continue
        single = loaded.predict(text=texts[i] or None, image=paths[i] if exists else None)
        row = batch.row(i)
        np.testing.assert_allclose(row.fused, single.fused, atol=1e-5)
        assert (row.image is None) == (single.image is None)
    assert (home / "data" / "cache" / "embeddings.sqlite").is_file()  # under STUDIO_HOME


def test_failed_save_keeps_the_old_bundle(trained, loaded):
    from core.models.classifier import Classifier

    class Boom:
        def save(self, path):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    path = trained["path"]
    before = sorted((p.name, p.stat().st_size) for p in path.iterdir())
    with pytest.raises(OSError, match="disk full"):
        Classifier(["a", "b"], text_model=Boom(), metadata=bundle.BundleMetadata(version="broken")).save(path)
    assert sorted((p.name, p.stat().st_size) for p in path.iterdir()) == before
    assert bundle.read_metadata(path).version == loaded.version
    assert leftovers(path.parent, path.name) == []


def test_resave_replaces_the_bundle(trained, tmp_path):
    from core.models.classifier import Classifier

    classifier = trained["classifier"]
    target = tmp_path / "m"
    make_old_bundle(target)
    assert classifier.save(target) == target.resolve()
    assert not (target / "only_in_old.txt").exists()
    again = Classifier.load(target)
    assert again.version == classifier.version and again.labels == classifier.labels


def test_load_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    from core.models.classifier import Classifier

    (tmp_path / bundle.TEXT_MODEL).write_text("not a model")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path}: not a model bundle")):
        Classifier.load(tmp_path)


def test_metadata_of_an_older_bundle_reads_with_defaults_and_keeps_unknown_keys():
    """Bundles saved before a key existed still load (the defaults stand in), and a key
    this code does not know survives a read and a save."""
    old = {"version": 20240101, "created_at": "2024-01-01T00:00:00+00:00", "backbone": "efficientnet_lite0",
           "metrics": {"validation": {"text": {"accuracy": 0.5}}}, "from_the_future": {"x": 1}}
    md = bundle.BundleMetadata.from_dict(old)
    assert md.version == "20240101" and md.format == bundle.FORMAT_VERSION and md.text_arch == "tfidf"
    assert md.rows == {} and md.per_class_train == {} and md.history is None and md.trained_from is None
    assert md.split_metrics() == {} and md.split_metrics("validation", "text") == {"accuracy": 0.5}
    assert md.split_metrics("eval_slice") == {}
    again = md.to_dict()
    assert again["from_the_future"] == {"x": 1} and "history" not in again and "trained_from" not in again
    assert bundle.BundleMetadata.from_dict(again) == md
    with pytest.raises(ValueError, match="JSON object"):
        bundle.BundleMetadata.from_dict(["not", "an", "object"])


def test_load_refuses_a_bundle_of_a_newer_format(tmp_path):
    from core.models.classifier import Classifier

    (tmp_path / bundle.METADATA).write_text(json.dumps({"version": "v", "format": bundle.FORMAT_VERSION + 1}))
    (tmp_path / bundle.LABELS).write_text('["a", "b"]')
    with pytest.raises(InputError, match=f"bundle format {bundle.FORMAT_VERSION + 1} is newer"):
        Classifier.load(tmp_path)


def test_text_only_catalogue(studio_home, tmp_path):
    from core.data.catalogue import load_catalogue
    from core.models.classifier import Classifier
    from core.training.trainer import TrainConfig, Trainer

    cat = write_catalogue(tmp_path, n_per_class=N_PER_CLASS, with_images=False, seed=4)
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    classifier = Trainer(TrainConfig(weights=None, folds=2, text_epochs=6), verbose=False).fit(catalogue)
    assert classifier.image_model is None and not classifier.fusion.fitted
    assert classifier.metadata.fusion["kind"] == "single_modality"
    assert classifier.metadata.rows["with_image"] == 0
    path = classifier.save(tmp_path / "m")
    assert not (path / bundle.IMAGE_MODEL).exists() and (path / bundle.TEXT_MODEL).exists()
    loaded = Classifier.load(path)
    assert loaded.image_model is None
    image = Image.new("RGB", (32, 32), (200, 0, 0))
    with_image = loaded.predict(text=cat.texts[0], image=image)
    assert with_image.image is None and with_image.label is not None
    with pytest.raises(InputError, match="no image part"):
        loaded.predict(image=image)


def test_classes_smaller_than_the_validation_folds(studio_home, tmp_path):
    """5 rows per class cannot make 7 validation folds: fewer folds are used, not a crash."""
    from core.data.catalogue import load_catalogue
    from core.training.trainer import TrainConfig, Trainer

    cat = write_catalogue(tmp_path, n_per_class=5, with_images=False, seed=5)
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    classifier = Trainer(TrainConfig(weights=None, folds=2, text_epochs=2), verbose=False).fit(catalogue)
    assert classifier.metadata.rows["validation"] > 0


def test_data_fingerprint_tracks_texts_labels_and_image_content(tmp_path):
    from core.training.trainer import data_fingerprint

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(a)
    Image.new("RGB", (4, 4), (0, 255, 0)).save(b)
    base = data_fingerprint(["t1", "t2"], ["x", "y"], [a, None])
    assert base == data_fingerprint(["t1", "t2"], ["x", "y"], [a, None])
    assert base != data_fingerprint(["t1", "t2 changed"], ["x", "y"], [a, None])
    assert base != data_fingerprint(["t1", "t2"], ["x", "x"], [a, None])
    assert base != data_fingerprint(["t1", "t2"], ["x", "y"], [b, None])
    Image.new("RGB", (4, 4), (0, 0, 255)).save(a)  # same path, new pixels
    assert base != data_fingerprint(["t1", "t2"], ["x", "y"], [a, None])


def copy_of(trained, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(trained["path"], tmp_path / "copy"))


def test_load_refuses_a_tampered_or_half_copied_bundle(trained, tmp_path):
    """Before the manifest, a changed fusion.json or a bundle copied without its text
    model loaded silently and predicted with whatever was there."""
    from core.models.classifier import Classifier

    path = copy_of(trained, tmp_path)
    saved = (path / bundle.FUSION).read_bytes()
    (path / bundle.FUSION).write_bytes(saved.replace(b"0", b"1", 1))
    with pytest.raises(InputError, match="tampered.*fusion.json changed since it was saved"):
        Classifier.load(path)
    (path / bundle.FUSION).write_bytes(saved)
    (path / bundle.TEXT_MODEL).unlink()
    with pytest.raises(InputError, match="half-written.*text_model.keras is missing"):
        Classifier.load(path)


def test_an_old_bundle_without_a_manifest_still_loads_unverified(trained, tmp_path):
    from core.models.classifier import Classifier

    path = copy_of(trained, tmp_path)
    (path / bundle.MANIFEST).unlink()
    old = Classifier.load(path)
    assert old.verified is False and old.version == trained["classifier"].version
