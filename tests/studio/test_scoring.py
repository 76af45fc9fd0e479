"""core.studio.scoring / core.studio.uploads / core.studio.batch with one small real Classifier (trained once
for the module on a generated catalogue with images, random backbone): what a scored
product records, content-addressed photos, bad input that must leave nothing behind,
and batch uploads (CSV + zip) staged safely and scored in one transaction."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers.catalogues import write_catalogue
from helpers.studio import count, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied

N_PER_CLASS = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(classifier, catalogue description) trained in a module-wide STUDIO_HOME."""
    from core.data.catalogue import load_catalogue
    from core.models.tf_setup import seed_everything
    from core.training.trainer import TrainConfig, Trainer

    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("scoring_home")
        mp.setenv("STUDIO_HOME", str(home))
        cat = write_catalogue(home / "catalogue", n_per_class=N_PER_CLASS, seed=11)
        seed_everything(0)
        config = TrainConfig(weights=None, folds=2, text_epochs=6, image_epochs=10, seed=0)
        classifier = Trainer(config, verbose=False).fit(load_catalogue(cat.csv_path, **cat.load_kwargs))
        classifier.metadata.version = classifier.metadata.version or "test-version"
        yield classifier, cat


@pytest.fixture
def classifier(trained):
    return trained[0]


@pytest.fixture
def cat(trained):
    return trained[1]


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rev", "reviewer"), ("viewer", "viewer"))


def photo(cat, row: int = 1) -> bytes:
    return (cat.image_dir / cat.rows[row - 1]["image"]).read_bytes()


def stored_files(home: Path) -> list[Path]:
    folder = home / "data" / "images"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def nothing_recorded(store, home: Path) -> bool:
    return (count(store, "products"), count(store, "predictions"), count(store, "images"),
            stored_files(home)) == (0, 0, 0, [])


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width×height pixels (a decompression bomb's header) and holds one row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- one product


def test_score_product_records_product_image_and_prediction(store, users, classifier, cat, studio_home):
    from core.common.images import content_hash
    from core.studio.review_queue import pending_count
    from core.studio.scoring import score_product

    text = "  " + cat.texts[0].replace(" ", "   \n", 1) + "  "
    data = photo(cat, 1)
    result = score_product(store, classifier, users["viewer"], text=text, image=data)
    expected = classifier.predict(text=cat.texts[0], image=io.BytesIO(data))

    product = store.one("SELECT * FROM products")
    assert product["id"] == result.product_id and product["created_by"] == "viewer"
    assert product["text"] == cat.texts[0] == result.text  # whitespace collapsed, case kept
    assert product["source"] == "upload" and product["image_hash"] == content_hash(data)

    image = store.one("SELECT * FROM images")
    assert image["hash"] == content_hash(data) and image["format"] == "PNG" and image["bytes"] == len(data)
    assert (image["width"], image["height"]) == result.image.image.size
    files = stored_files(studio_home)
    assert len(files) == 1 and files[0].read_bytes() == data and files[0].suffix == ".png"
    assert studio_home / "data" / image["path"] == files[0]

    pred = store.one("SELECT * FROM predictions")
    assert pred["id"] == result.prediction_id and pred["product_id"] == result.product_id
    assert pred["model_version"] == classifier.version and pred["user"] == "viewer"
    assert json.loads(pred["labels"]) == classifier.labels == cat.classes
    for column, probs in (("fused", expected.fused), ("text_probs", expected.text),
                          ("image_probs", expected.image)):
        np.testing.assert_allclose(json.loads(pred[column]), probs, atol=2e-6)
    assert pred["label"] == expected.label == result.prediction.label
    assert pred["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    top = np.sort(expected.fused)[::-1]
    assert pred["margin"] == pytest.approx(top[0] - top[1], abs=2e-6)
    assert (pred["text_label"], pred["image_label"]) == (expected.text_label, expected.image_label)
    assert pred["disagree"] == int(expected.disagree)
    assert pred["latency_ms"] > 0
    assert pending_count(store) == 1  # it entered the review queue


def test_text_only_and_photo_only(store, users, classifier, cat, studio_home):
    from core.studio.scoring import score_product

    text_only = score_product(store, classifier, users["viewer"], text=cat.texts[1])
    photo_only = score_product(store, classifier, users["viewer"], image=photo(cat, 2))
    rows = {r["product_id"]: r for r in store.query("SELECT * FROM predictions")}
    a, b = rows[text_only.product_id], rows[photo_only.product_id]
    assert a["image_probs"] is None and a["image_label"] is None and json.loads(a["text_probs"])
    assert b["text_probs"] is None and b["text_label"] is None and json.loads(b["image_probs"])
    assert a["disagree"] == 0 and b["disagree"] == 0
    products = {r["id"]: r for r in store.query("SELECT * FROM products")}
    assert products[text_only.product_id]["image_hash"] is None
    assert products[photo_only.product_id]["text"] == ""
    assert len(stored_files(studio_home)) == 1


def test_the_same_photo_twice_is_stored_once(store, users, classifier, cat, studio_home):
    from core.studio.scoring import score_product

    data = photo(cat, 3)
    first = score_product(store, classifier, users["viewer"], text="first", image=data)
    second = score_product(store, classifier, users["rev"], text="second", image=data)
    assert first.product_id != second.product_id
    assert count(store, "images") == 1 and count(store, "products") == 2 and count(store, "predictions") == 2
    assert len(stored_files(studio_home)) == 1
    hashes = {r["image_hash"] for r in store.query("SELECT image_hash FROM products")}
    assert hashes == {first.image.hash} == {second.image.hash}


@pytest.mark.parametrize("case", ["nothing", "blank text", "truncated", "not an image", "empty text + bad image",
                                  "huge header", "too long text"])
def test_bad_input_leaves_nothing(store, users, classifier, cat, studio_home, case):
    from core.studio.scoring import MAX_TEXT_CHARS, score_product

    good = photo(cat, 4)
    kwargs, message = {
        "nothing": ({}, "give a description, a photo, or both"),
        "blank text": ({"text": "  \n\t "}, "give a description"),
        "truncated": ({"text": "a watch", "image": good[: len(good) // 2]}, "truncated or corrupt"),
        "not an image": ({"text": "a watch", "image": b"%PDF-1.4 definitely not a photo"}, "not an image"),
        "empty text + bad image": ({"text": "", "image": b"\x00" * 100}, "not an image"),
        "huge header": ({"text": "a watch", "image": png_header(50_000, 50_000)}, "too large"),
        "too long text": ({"text": "w" * (MAX_TEXT_CHARS + 1), "image": good}, "too long"),
    }[case]
    with pytest.raises(InputError, match=message):
        score_product(store, classifier, users["viewer"], **kwargs)
    assert nothing_recorded(store, studio_home)


def test_an_oversized_photo_is_refused(store, users, classifier, cat, studio_home, monkeypatch):
    import core.common.images
    from core.studio.scoring import score_product

    monkeypatch.setattr(core.common.images, "MAX_PIXELS", 100)
    with pytest.raises(InputError, match="too large"):
        score_product(store, classifier, users["viewer"], text="a watch", image=photo(cat, 1))
    assert nothing_recorded(store, studio_home)


def test_scoring_needs_a_user(store, classifier):
    from core.studio.scoring import score_product

    with pytest.raises(PermissionDenied):
        score_product(store, classifier, None, text="a watch")
    assert count(store, "products") == 0


def test_a_failed_save_leaves_no_product(store, users, classifier, monkeypatch):
    """The product and its prediction land together: a failure on the second rolls back the first."""
    import core.studio.scoring

    def broken_row(*args, **kwargs):
        row = real(*args, **kwargs)
        row["product_id"] = 10_000  # violates the foreign key
        return row

    real = core.studio.scoring.prediction_row
    monkeypatch.setattr(core.studio.scoring, "prediction_row", broken_row)
    with pytest.raises(Exception):
        core.studio.scoring.score_product(store, classifier, users["viewer"], text="a kettle")
    assert count(store, "products") == 0 and count(store, "predictions") == 0


# --------------------------------------------------------------------------- batches


def make_batch(root: Path, *, folder: str = ""):
    """A catalogue CSV + zip: 6 rows with photos (one missing from the zip), one row whose
    photo is broken (scored on text), one row with neither text nor photo (skipped)."""
    cat = write_catalogue(root, n_per_class=2, missing_images=1, seed=5)
    csv_text = cat.csv_path.read_text()
    csv_text += "Acme watch dial strap,Classic chronograph,Watches,broken.png\n"
    csv_text += ",,Toys,ghost.png\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for image in sorted(cat.image_dir.iterdir()):
            archive.write(image, f"{folder}{image.name}")
        archive.writestr(f"{folder}broken.png", b"\x89PNG\r\n\x1a\n broken")
        archive.writestr(f"__MACOSX/{folder}._img_0000.png", b"resource fork")
        archive.writestr(f"{folder}.DS_Store", b"junk")
    return cat, csv_text.encode(), buffer.getvalue()


@pytest.mark.parametrize("folder", ["", "photos/"])
def test_score_batch_records_one_product_per_usable_row(store, users, classifier, tmp_path, studio_home, folder):
    from core.studio.batch import load_staged, score_batch, stage_upload
    from core.studio.review_queue import pending_count

    cat, csv_bytes, zip_bytes = make_batch(tmp_path / "batch", folder=folder)
    upload = stage_upload(csv_bytes, "products.csv", zip_bytes)
    assert upload.columns == ["title", "description", "category", "image"]
    assert upload.rows == len(cat.rows) + 2
    assert upload.image_dir.name == (folder.strip("/") or "images")
    assert upload.folder.parent == studio_home / "data" / "uploads"

    catalogue = load_staged(upload, text_cols=["title", "description"], image_col="image", label_col="category")
    progress = []
    result = score_batch(store, classifier, users["rev"], catalogue, on_progress=lambda f, m: progress.append(f))

    n_rows = len(cat.rows) + 2
    assert (result.scored, result.skipped) == (n_rows - 1, 1)
    assert len(result.product_ids) == result.scored == count(store, "products") == count(store, "predictions")
    assert progress[-1] == 1.0 and progress == sorted(progress)

    frame = result.frame
    assert len(frame) == n_rows and list(frame["row"]) == list(range(1, n_rows + 1))
    assert frame.loc[n_rows - 1, "status"].startswith("skipped")
    assert (frame["status"] == "scored").sum() == result.scored

    products = {r["source_ref"]: r for r in store.query("SELECT * FROM products")}
    assert set(products) == {str(i) for i in range(1, n_rows)}
    assert all(p["source"].startswith("batch:") and p["created_by"] == "rev" for p in products.values())
    assert [products[str(i)]["true_label"] for i in range(1, len(cat.rows) + 1)] == cat.labels
    # photos: every row whose file was in the zip; not the missing one, not the broken one
    with_photo = {str(i) for i in range(1, len(cat.rows) + 1) if i not in cat.missing_rows}
    assert {ref for ref, p in products.items() if p["image_hash"]} == with_photo
    assert count(store, "images") == len(with_photo) == len(stored_files(studio_home))

    # the recorded probabilities are the model's
    row = min(int(r) for r in with_photo)
    pred = store.one("SELECT p.* FROM predictions p JOIN products pr ON pr.id = p.product_id "
                     "WHERE pr.source_ref = ?", [str(row)])
    single = classifier.predict(text=cat.texts[row - 1], image=cat.image_dir / cat.rows[row - 1]["image"])
    np.testing.assert_allclose(json.loads(pred["fused"]), single.fused, atol=1e-4)
    assert pred["label"] == single.label and pred["model_version"] == classifier.version
    broken = store.one("SELECT p.* FROM predictions p JOIN products pr ON pr.id = p.product_id "
                       "WHERE pr.source_ref = ?", [str(n_rows - 1)])
    assert broken["image_probs"] is None and broken["text_probs"] is not None
    assert pending_count(store) == result.scored
    assert result.new_products == result.scored

    # the same batch scored again: new predictions for the same products, no new queue items
    again = score_batch(store, classifier, users["rev"], catalogue)
    assert (again.scored, again.new_products) == (result.scored, 0)
    assert again.product_ids == result.product_ids
    assert count(store, "products") == result.scored and count(store, "predictions") == 2 * result.scored
    assert pending_count(store) == result.scored


def test_a_viewer_cannot_score_a_batch(store, users, classifier, tmp_path):
    from core.studio.batch import load_staged, score_batch, stage_upload

    cat, csv_bytes, zip_bytes = make_batch(tmp_path / "batch")
    catalogue = load_staged(stage_upload(csv_bytes, "products.csv", zip_bytes), text_cols=["title"])
    with pytest.raises(PermissionDenied):
        score_batch(store, classifier, users["viewer"], catalogue)
    assert count(store, "products") == 0 and count(store, "predictions") == 0


def test_a_batch_with_no_usable_row(store, users, classifier):
    from core.studio.batch import load_staged, score_batch, stage_upload

    catalogue = load_staged(stage_upload(b"title,image\n,\n,x.png\n", "empty.csv"), text_cols=["title"],
                            image_col="image")
    with pytest.raises(InputError, match="no row has a description or a usable image"):
        score_batch(store, classifier, users["rev"], catalogue)
    assert count(store, "products") == 0


def uploads(studio_home: Path) -> list[Path]:
    folder = studio_home / "data" / "uploads"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("member", ["../evil.jpg", "photos/../../evil.jpg", "/tmp/evil.jpg", "..\\evil.jpg",
                                    "C:/evil.jpg"])
def test_a_zip_escaping_its_folder_is_refused(studio_home, tmp_path, member):
    from core.studio.batch import stage_upload

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.png", b"fine")
        archive.writestr(zipfile.ZipInfo(member), b"evil")
    with pytest.raises(InputError, match="unsafe path"):
        stage_upload(b"title,image\nwatch,ok.png\n", "p.csv", buffer.getvalue())
    assert not list(studio_home.rglob("evil.jpg")) and not list(tmp_path.rglob("evil.jpg"))
    assert not Path("/tmp/evil.jpg").exists() or Path("/tmp/evil.jpg").read_bytes() != b"evil"
    assert uploads(studio_home) == []  # the refused upload left nothing behind


def test_images_outside_the_upload_are_not_read(store, users, classifier, tmp_path, cat):
    """A CSV naming an absolute path or ../ cannot make the batch read files elsewhere."""
    from core.studio.batch import load_staged, stage_upload

    outside = cat.image_dir / cat.rows[0]["image"]
    csv = f"title,image\nwatch,{outside}\nwatch,../../../{outside.name}\n".encode()
    catalogue = load_staged(stage_upload(csv, "p.csv"), text_cols=["title"], image_col="image")
    assert catalogue.image_paths == [None, None]
    reasons = [m["reason"] for m in catalogue.report.missing_images]
    assert "absolute image paths are not allowed here" in reasons[0]
    assert "outside" in reasons[1] or "not found" in reasons[1]


def test_a_wrong_column_name_is_named(studio_home):
    from core.studio.batch import load_staged, stage_upload

    upload = stage_upload(b"title,description\nwatch,a dial\n", "products.csv")
    with pytest.raises(InputError, match=r"no text column 'titel'.*did you mean 'title'"):
        load_staged(upload, text_cols=["titel"])
    with pytest.raises(InputError, match="no image column 'photo'"):
        load_staged(upload, text_cols=["title"], image_col="photo")
    with pytest.raises(InputError, match="at least one text column"):
        load_staged(upload, text_cols=[])


def test_a_csv_that_is_not_utf8(studio_home):
    from core.studio.batch import stage_upload

    latin1 = "title,description\nCafé crème,tasse\n".encode("latin-1")
    with pytest.raises(InputError, match=r"products.csv: cannot decode line 2 .* as utf-8"):
        stage_upload(latin1, "products.csv")
    assert uploads(studio_home) == []
    upload = stage_upload(latin1, "products.csv", encoding="latin-1")
    assert upload.rows == 1


@pytest.mark.parametrize("csv_bytes, zip_bytes, message", [
    (b"", None, "empty"),
    (b"  \n", None, "empty"),
    (b"title\n", None, "no rows"),
    (b"title\nwatch\n", b"PK\x03\x04 not really a zip", "not a valid zip"),
])
def test_bad_uploads(studio_home, csv_bytes, zip_bytes, message):
    from core.studio.batch import stage_upload

    with pytest.raises(InputError, match=message):
        stage_upload(csv_bytes, "p.csv", zip_bytes)
    assert uploads(studio_home) == []


def test_too_many_rows(studio_home, monkeypatch):
    import core.studio.batch

    monkeypatch.setattr(core.studio.batch, "MAX_ROWS", 2)
    with pytest.raises(InputError, match="3 rows; score at most 2"):
        core.studio.batch.stage_upload(b"title\na\nb\nc\n", "p.csv")


@pytest.mark.parametrize("name", ["../../etc/products.csv", "..", "images", ""])
def test_the_csv_name_cannot_leave_the_upload_folder(studio_home, name):
    from core.studio.batch import stage_upload

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", b"x")
    upload = stage_upload(b"title,image\nwatch,a.png\n", name, buffer.getvalue())
    assert upload.csv_path.parent == upload.folder and upload.csv_path.is_file()
    assert upload.image_dir == upload.folder / "images"


@pytest.mark.parametrize("fmt, stored_as, suffix", [("PNG", "PNG", ".png"), ("JPEG", "JPEG", ".jpg"),
                                                    ("MPO", "JPEG", ".jpg"), ("WEBP", "JPEG", ".jpg")])
def test_stored_photos_keep_a_usable_extension(studio_home, fmt, stored_as, suffix):
    """Phone photos are often MPO (a JPEG with extra frames): stored photos are re-encoded
    (issue 10: nothing of the upload but its pixels is kept), a JPEG-like photo as .jpg and
    the rest as .png, so browsers and st.image recognise the file; the hash names those bytes."""
    from PIL import Image

    from core.common.images import content_hash
    from core.studio.uploads import image_path, store_image

    buffer = io.BytesIO()
    extra = {"save_all": True, "append_images": [Image.new("RGB", (8, 8))]} if fmt == "MPO" else {}
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, fmt, **extra)
    stored = store_image(buffer.getvalue())
    assert stored.format == stored_as and stored.path.suffix == suffix
    assert image_path(stored.hash) == stored.path and content_hash(stored.path.read_bytes()) == stored.hash
    assert store_image(buffer.getvalue()).path == stored.path  # stored once
    assert image_path("0" * 64) is None


def test_a_tree_models_batch_result_has_each_levels_name_and_confidence(tmp_path):
    """result_frame with a tree model's predictions: the path leads, each level follows with
    its confidence (a level is never surer than its parent), a skipped row stays empty."""
    import pandas as pd
    from helpers.studio import make_prediction

    from core.data.catalogue import load_catalogue
    from core.studio.batch import result_frame

    csv = tmp_path / "b.csv"
    csv.write_text("sku,title\nA-1,cotton bedsheet\nB-2,\nC-3,jigsaw puzzle\n")
    catalogue = load_catalogue(csv, text_cols=["title"])
    labels = ["Home >> Bath", "Home >> Bed", "Toys >> Puzzles"]
    predictions = {0: make_prediction([0.2, 0.7, 0.1], labels=labels), 2: make_prediction([0.1, 0.1, 0.8], labels=labels)}
    frame = result_frame(catalogue, predictions, {0: 11, 2: 13})
    assert list(frame.columns[:5]) == ["label", "confidence", "disagree", "sku", "title"]
    assert list(frame.columns[-4:]) == ["level_1", "confidence_level_1", "level_2", "confidence_level_2"]
    assert frame["label"].tolist()[::2] == ["Home >> Bed", "Toys >> Puzzles"]
    assert frame.loc[0, ["level_1", "level_2"]].tolist() == ["Home", "Bed"]
    assert frame.loc[0, "confidence_level_1"] == pytest.approx(0.9) and frame.loc[0, "confidence_level_2"] == 0.7
    assert pd.isna(frame.loc[1, "level_1"]) and frame.loc[1, "status"].startswith("skipped")
