"""Issue 10 item 3: batch scoring and catalogue import hold a bounded number of decoded
photos, whatever the number of rows.

Every decoded photo the upload store makes (`core.studio.uploads.open_image`) is tracked through
a weak reference; when the rows are written to the database (`record_image`, called once
per photo after all of them were stored) we count how many of those photos are still
alive. Before the fix each row's StoredImage kept its decoded full-size image until the
end: all N were alive there. Now only hashes and metadata are kept: none is.
The peak-RSS benchmark (16 vs 160 photos of 3000×3000) is bench/bench_memory.py."""

from __future__ import annotations

import gc
import weakref

import pytest
from PIL import Image

CLASSES = ("Kitchen", "Toys", "Watches")
PER_CLASS = 7
ROWS = PER_CLASS * len(CLASSES)


@pytest.fixture
def live_photos(monkeypatch):
    """(tracker, peaks): `tracker` holds a weak reference to every photo the upload store
    decoded; `peaks` gets how many were alive at the first, middle and last `record_image` call of import and batch."""
    import core.studio.batch
    import core.studio.labels
    import core.studio.uploads

    tracker: list[weakref.ref] = []  # PIL images are unhashable: no WeakSet
    peaks: list[int | None] = []  # one entry per record_image call; counted at the first, middle and last
    real_open = core.studio.uploads.open_image

    def tracked_open(*args, **kwargs):
        image = real_open(*args, **kwargs)
        tracker.append(weakref.ref(image))
        return image

    def counting_record(record):
        def wrapped(db, stored):
            if len(peaks) in (0, ROWS // 2, ROWS - 1):  # a full gc takes ~1.5 s with TensorFlow loaded
                gc.collect()
                peaks.append(sum(ref() is not None for ref in tracker))
            else:
                peaks.append(None)
            return record(db, stored)
        return wrapped

    monkeypatch.setattr(core.studio.uploads, "open_image", tracked_open)
    monkeypatch.setattr(core.studio.labels, "record_image", counting_record(core.studio.labels.record_image))
    monkeypatch.setattr(core.studio.batch, "record_image", counting_record(core.studio.batch.record_image))
    return tracker, peaks


def photo_catalogue(make_catalogue, root):
    """ROWS labelled rows, each with its own photo of about 640×480 (~1 MB decoded)."""
    from core.data.catalogue import load_catalogue

    cat = make_catalogue(root, n_per_class=PER_CLASS, classes=CLASSES, image_size=(640, 480))
    return load_catalogue(cat.csv_path, **cat.load_kwargs)


def test_catalogue_import_keeps_no_decoded_photo_per_row(tmp_path, store, make_catalogue, live_photos):
    from core.studio.auth import User
    from core.studio.labels import import_catalogue
    from core.studio.uploads import image_path

    tracker, peaks = live_photos
    catalogue = photo_catalogue(make_catalogue, tmp_path / "cat")
    summary = import_catalogue(store, User.system("test"), catalogue, "photos")

    assert summary.added == ROWS and len(peaks) == ROWS  # every photo stored and recorded
    counted = [n for n in peaks if n is not None]
    assert len(counted) == 3 and max(counted) <= 1, f"{counted} decoded photos alive while {ROWS} rows were written"
    # only hash + metadata were kept, and the photo can be re-read from its stored file
    hashes = [r["image_hash"] for r in store.query("SELECT image_hash FROM products ORDER BY id")]
    assert len(hashes) == ROWS and all(h and image_path(h) is not None for h in hashes)


def test_stored_image_without_pixels_reopens_from_its_file(studio_home):
    import io

    from core.studio.uploads import store_image

    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 30)).save(buffer, "PNG")
    stored = store_image(buffer.getvalue())
    light = stored.without_image()
    assert light.image is None and (light.hash, light.width, light.height) == (stored.hash, 300, 200)
    reopened = light.open()
    assert reopened.size == (300, 200) and reopened.getpixel((5, 5)) == (10, 120, 30)


def test_batch_scoring_keeps_no_decoded_photo_per_row(tmp_path, studio_home, tiny_bundle, make_catalogue,
                                                      live_photos):
    from core.models.classifier import Classifier
    from core.studio.auth import User
    from core.studio.batch import score_batch
    from core.studio.store import Store

    tracker, peaks = live_photos
    catalogue = photo_catalogue(make_catalogue, tmp_path / "batch")
    store = Store()
    result = score_batch(store, Classifier.load(tiny_bundle), User.system("test"), catalogue, chunk=8)

    assert result.scored == ROWS and len(peaks) == ROWS
    counted = [n for n in peaks if n is not None]
    assert len(counted) == 3 and max(counted) <= 1, f"{counted} decoded photos alive while {ROWS} rows were written"
