"""The disk stays bounded and CSV downloads are safe (issue 10, item 8 and part of 9):
staged uploads are removed once scored or imported (and abandoned ones after a day, also at
start-up), a zip that expands too much is refused before anything is unpacked, stored
photos are re-encoded (nothing appended after the image survives, the same photo keeps one
hash), the zip's photo-folder guess takes time in proportion to the zip, and every CSV the
app hands out defuses cells a spreadsheet would run as a formula.

The last tests walk the real Batch and Models pages (AppTest, real SQLite home)."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from helpers.apptest import button, count, errors, login, ok, open_page

pytestmark = pytest.mark.usefixtures("fresh_streamlit_process")  # some tests drive the app (AppTest)
from PIL import Image

from core.common.errors import InputError


def png(colour: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def staged_folders(home: Path) -> list[Path]:
    folder = home / "data" / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- staged uploads


def test_a_staged_upload_is_removed_when_done_and_a_server_folder_never(studio_home: Path, tmp_path: Path):
    from core.studio.batch import discard_upload, open_folder_csv, stage_upload

    upload = stage_upload(b"title,image\nred kettle,a.png\n", "c.csv", zip_of({"a.png": png((200, 0, 0))}))
    assert staged_folders(studio_home) == [upload.folder]
    discard_upload(upload)
    assert staged_folders(studio_home) == []

    mine = tmp_path / "catalogues"
    mine.mkdir()
    (mine / "c.csv").write_text("title\nred kettle\n")
    discard_upload(open_folder_csv(mine / "c.csv"))  # an admin's folder on the server is theirs
    assert (mine / "c.csv").is_file()


def test_abandoned_uploads_are_removed_after_a_day_and_at_start_up(studio_home: Path):
    from core.studio.batch import tidy_disk
    from core.studio.batch import remove_stale_uploads, stage_upload

    old = stage_upload(b"title\nold\n", "old.csv")
    day_ago = time.time() - 25 * 3600
    os.utime(old.folder, (day_ago, day_ago))
    fresh = stage_upload(b"title\nfresh\n", "fresh.csv")  # a new upload sweeps the abandoned one
    assert staged_folders(studio_home) == [fresh.folder]

    os.utime(fresh.folder, (day_ago, day_ago))
    assert remove_stale_uploads(max_age_s=30 * 3600) == 0
    tidy_disk()  # what `python -m core serve` does at start-up
    assert staged_folders(studio_home) == []


def test_a_zip_that_expands_too_much_is_refused_before_unpacking(studio_home: Path):
    from core.studio.batch import stage_upload

    bomb = zip_of({"a.png": png((1, 2, 3)), "b.png": b"\0" * (8 * 1024**2)})  # 8 MB of zeros: ~8 KB packed
    with pytest.raises(InputError, match=r"zip member 'b.png' expands more than 100-fold.*zip bomb"):
        stage_upload(b"title,image\nx,a.png\n", "c.csv", bomb)
    # many members each under the per-member floor still add up
    many = zip_of({f"p{i}.bin": b"\0" * (900 * 1024) for i in range(4)})
    with pytest.raises(InputError, match=r"the zip expands more than 100-fold"):
        stage_upload(b"title,image\nx,p0.bin\n", "c.csv", many)
    assert staged_folders(studio_home) == []
    # ordinary photos (they hardly compress) pass
    fine = stage_upload(b"title,image\nx,a.png\n", "c.csv", zip_of({"a.png": png((9, 9, 9))}))
    assert fine.image_files == frozenset({"a.png"})


def test_the_photo_folder_guess_takes_time_in_proportion_to_the_zip():
    """30,000 members each in its own folders (90,000 candidate folders) and 500 names: the
    guess answers in well under a second (it tried every folder with every name before)."""
    from core.studio.batch import _best_image_prefix

    files = {f"junk{i}/a/b/f{i}.jpg" for i in range(30_000)} | {f"top/photos/p{i}.jpg" for i in range(600)}
    names = [f"p{i}.jpg" for i in range(600)]
    started = time.perf_counter()
    assert _best_image_prefix(files, names) == "top/photos"
    assert time.perf_counter() - started < 1.0
    assert _best_image_prefix({"p1.jpg", "x/p1.jpg"}, ["p1.jpg"]) == ""  # a tie: the shallowest
    assert _best_image_prefix({"x/p1.jpg"}, ["http://a/p1.jpg", "../p1.jpg", ""]) == ""


# --------------------------------------------------------------------------- stored photos


def test_stored_photos_are_re_encoded_and_keep_one_hash(studio_home: Path):
    from core.common.images import content_hash
    from core.studio.uploads import image_path, store_image

    clean = png((30, 60, 90))
    junk = b"PK\x03\x04<?php system($_GET['c']); ?>"
    stored = store_image(clean + junk)
    data = stored.path.read_bytes()
    assert junk not in data and b"<?php" not in data
    assert stored.hash == content_hash(data) and stored.bytes == len(data) and stored.format == "PNG"
    assert image_path(stored.hash) == stored.path
    # the same photo with other trailing bytes (or none) is the same stored image
    assert store_image(clean + b"other junk").hash == stored.hash == store_image(clean).hash
    assert len([p for p in (studio_home / "data" / "images").rglob("*") if p.is_file()]) == 1

    buffer = io.BytesIO()  # a JPEG stays a JPEG (high quality), without its EXIF
    exif = Image.Exif()
    exif[0x010E] = "secret description"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, "JPEG", exif=exif)
    jpeg = store_image(buffer.getvalue() + junk)
    assert jpeg.format == "JPEG" and jpeg.path.suffix == ".jpg"
    assert b"secret description" not in jpeg.path.read_bytes() and junk not in jpeg.path.read_bytes()


# --------------------------------------------------------------------------- CSV downloads


def test_batch_results_csv_defuses_formulas():
    from core.studio.batch import to_csv_bytes

    frame = pd.DataFrame({"title": ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2", "@SUM(A1)", "\tTAB", "\tTAB2",
                                    "plain", "a=b"],
                          "confidence": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]})
    back = pd.read_csv(io.BytesIO(to_csv_bytes(frame)), dtype=str, keep_default_na=False)
    assert back["title"].tolist()[:4] == ["'=HYPERLINK(\"http://x\",\"y\")", "'+1+1", "'-2", "'@SUM(A1)"]
    assert back["title"].tolist()[6:] == ["plain", "a=b"]
    assert all(v.startswith("'") for v in back["title"].tolist()[4:6])
    assert back["confidence"].tolist()[0] == "-0.5"  # numbers stay numbers

    from core.common.files import defuse_formula  # the one rule, shared with core.studio.export

    assert defuse_formula("\rCR") == "'\rCR" and defuse_formula(3) == 3


# --------------------------------------------------------------------------- pages


def small_upload(*, labels: bool = False) -> tuple[bytes, bytes]:
    rows = [("=HYPERLINK(\"http://evil\")", "Watches", "w.png", (10, 10, 200)),
            ("steel kettle with a wooden handle", "Kitchen", "k.png", (200, 10, 10)),
            ("plush bear toy for children", "Toys", "t.png", (10, 200, 10))]
    head = "title,category,image\n" if labels else "title,image\n"
    body = "".join(f'"{t.replace(chr(34), chr(34) * 2)}",{c + "," if labels else ""}{i}\n' for t, c, i, _ in rows)
    return (head + body).encode(), zip_of({f"photos/{i}": png(colour) for _, _, i, colour in rows})


def test_batch_page_leaves_no_staged_copy_and_scores_again(app_home):
    csv_bytes, zip_bytes = small_upload()
    at = open_page(login("rita"), "batch")
    at.file_uploader(key="batch_csv").upload("products.csv", csv_bytes, "text/csv")
    at.file_uploader(key="batch_zip").upload("photos.zip", zip_bytes, "application/zip")
    at = ok(at.run())
    assert errors(at) == [] and len(staged_folders(app_home.home)) == 1
    at.selectbox(key="batch_image_col").select("image")
    button(at, "Score the batch").click()
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    assert (at.dataframe[0].value["status"] == "scored").all() and count("images") == 3
    assert staged_folders(app_home.home) == []  # photos stored, the upload's copy gone

    button(at, "Score the batch").click()  # again: the same files are staged once more, then removed
    at = ok(at.run())
    assert errors(at) == [] and (at.dataframe[0].value["status"] == "scored").all()
    assert staged_folders(app_home.home) == [] and count("products") == 3


def test_batch_page_refuses_a_zip_bomb_and_keeps_nothing(app_home):
    csv_bytes, _ = small_upload()
    at = open_page(login("rita"), "batch")
    at.file_uploader(key="batch_csv").upload("products.csv", csv_bytes, "text/csv")
    at.file_uploader(key="batch_zip").upload("photos.zip", zip_of({"w.png": b"\0" * (5 * 1024**2)}),
                                             "application/zip")
    at = ok(at.run())
    assert len(errors(at)) == 1 and errors(at)[0].startswith("Cannot read the upload: the zip member 'w.png' "
                                                             "expands more than 100-fold")
    assert staged_folders(app_home.home) == [] and count("products") == 0


def test_models_import_leaves_no_staged_copy(app_home):
    csv_bytes, zip_bytes = small_upload(labels=True)
    at = open_page(login("admin"), "models")
    at.file_uploader(key="import_csv").upload("extra.csv", csv_bytes, "text/csv")
    at.file_uploader(key="import_zip").upload("photos.zip", zip_bytes, "application/zip")
    at = ok(at.run())
    assert errors(at) == [] and len(staged_folders(app_home.home)) == 1
    at.selectbox(key="import_label_col").select("category")
    at.selectbox(key="import_image_col").select("image")
    before = count("products")
    button(at, "Import").click()
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    assert count("products") == before + 3 and staged_folders(app_home.home) == []
