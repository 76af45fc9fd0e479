"""Uploads through the real pages: a Flipkart CSV (long descriptions) with its photo zip
on Batch and on Models → Import (the "File name too long" crash, issue 9 bug 2), the
guessed column mapping, the result table and download, messages that never show the
server's folders, success messages that survive the rerun (promote, user saved) and a
failed job's message that does not stick forever.

AppTest runs the real scripts against a real SQLite home (fixture `app_home`); the last
test does the Batch upload in chromium against `streamlit run`."""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from helpers.app_home import PASSWORDS
from helpers.apptest import button, count, errors, login, ok, open_page, second_bundle, store
from helpers.browser import browser_page, chromium_path, log_in, streamlit_server

FLIPKART = Path("/work/shared/data/flipkart")
PER_CLASS = 4  # 7 classes → 28 rows: a real sample, fast on 2 cores

needs_flipkart = pytest.mark.skipif(not (FLIPKART / "products.csv").exists() or not (FLIPKART / "images").is_dir(),
                                    reason="the shared Flipkart sample is absent")


def flipkart_upload(*, leave_out: int = 0) -> tuple[bytes, bytes, pd.DataFrame]:
    """(csv, zip, frame): the first PER_CLASS rows of each top-level category of the shared
    Flipkart sample, all 15 columns (descriptions of 1,000+ characters), and a zip of their
    photos inside a top folder the CSV does not name. `leave_out` photos are not zipped."""
    from core.data.csv_files import read_csv

    frame = read_csv(FLIPKART / "products.csv")
    top = frame["product_category_tree"].str.split(">>").str[0]
    frame = frame[frame["image"].map(lambda n: (FLIPKART / "images" / n).is_file())]
    sample = frame.groupby(top.loc[frame.index], sort=False).head(PER_CLASS).reset_index(drop=True)
    assert sample["description"].str.len().max() > 1000  # the long text that crashed the upload
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sample["image"].tolist()[leave_out:]:
            archive.write(FLIPKART / "images" / name, f"flipkart/images/{name}")
    return sample.to_csv(index=False).encode("utf-8"), buffer.getvalue(), sample


def page_text(at) -> str:
    """Every message and caption the page shows."""
    parts = [e.value for kind in ("error", "warning", "success", "info", "caption", "markdown", "exception")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def assert_no_server_path(text: str, home: Path) -> None:
    assert "File name too long" not in text and "Errno" not in text
    for secret in (str(home), str(home.resolve()), "/work/", "/tmp/", "data/uploads"):
        assert secret not in text, f"{secret!r} shown on the page:\n{text}"


# --------------------------------------------------------------------------- batch


@needs_flipkart
def test_batch_scores_a_flipkart_csv_with_its_photo_zip(app_home):
    csv_bytes, zip_bytes, sample = flipkart_upload()
    at = open_page(login("rita"), "batch")
    at.file_uploader(key="batch_csv").upload("products.csv", csv_bytes, "text/csv")
    at.file_uploader(key="batch_zip").upload("photos.zip", zip_bytes, "application/zip")
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    # the guessed mapping: names and descriptions as text, the file names as photos
    assert at.multiselect(key="batch_text_cols").value == ["product_name", "description"]
    assert at.selectbox(key="batch_image_col").value == "image"
    button(at, "Score the batch").click()
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    assert_no_server_path(page_text(at), app_home.home)

    frame = at.dataframe[0].value
    assert len(frame) == len(sample) and (frame["status"] == "scored").all()
    assert list(frame.columns[:2]) == ["label", "confidence"]
    assert frame["uniq_id"].tolist() == sample["uniq_id"].tolist()  # the user's own columns, in order
    assert count("products") == len(sample) and count("images") == len(sample)  # every photo found in the zip
    assert at.success[0].value.startswith(f"Scored {len(sample):,} products (0 rows skipped)")


@needs_flipkart
def test_batch_refuses_a_description_as_the_image_column_without_leaking_paths(app_home):
    csv_bytes, zip_bytes, sample = flipkart_upload(leave_out=2)
    at = open_page(login("rita"), "batch")
    at.file_uploader(key="batch_csv").upload("products.csv", csv_bytes, "text/csv")
    at.file_uploader(key="batch_zip").upload("photos.zip", zip_bytes, "application/zip")
    at = ok(at.run())
    at.selectbox(key="batch_image_col").select("description")
    button(at, "Score the batch").click()
    at = ok(at.run())
    assert len(errors(at)) == 1
    assert errors(at)[0].startswith("Cannot score this batch: products.csv: column 'description' does not hold "
                                    "image file names (row 1 is ")
    assert count("products") == 0 and not at.dataframe
    assert_no_server_path(page_text(at), app_home.home)

    # the right column: two photos are missing from the zip, named relative to it
    at.selectbox(key="batch_image_col").select("image")
    button(at, "Score the batch").click()
    at = ok(at.run())
    assert errors(at) == []
    text = page_text(at)
    assert_no_server_path(text, app_home.home)
    for name in sample["image"][:2]:  # named where the zip was searched, relative to it
        assert f"file not found: flipkart/images/{name}" in text
    assert count("products") == len(sample) and count("images") == len(sample) - 2


def test_the_download_keeps_the_users_columns(app_home, tmp_path):
    """result_frame: label and confidence first, then every column of the CSV as uploaded
    (a clashing name kept as "<name> (yours)"), then the details; skipped rows too."""
    from helpers.apptest import classifier, user_object

    from core.studio.batch import load_staged, score_batch, stage_upload, to_csv_bytes
    from core.studio.store import Store

    csv = ("sku,title,label,image\nA-1,Acme watch dial strap,Watches,\nB-2,Zenith skillet ladle kettle,Kitchen,\n"
           "C-3,,Toys,\n").encode()
    upload = stage_upload(csv, "mine.csv")
    assert upload.guess.id == "sku" and upload.guess.text == ["title"]
    catalogue = load_staged(upload, text_cols=["title"])
    result = score_batch(Store(), classifier(), user_object("rita"), catalogue)
    frame = pd.read_csv(io.BytesIO(to_csv_bytes(result.frame)), dtype=str, keep_default_na=False)
    assert list(frame.columns[:6]) == ["label", "confidence", "disagree", "sku", "title", "label (yours)"]
    assert frame["sku"].tolist() == ["A-1", "B-2", "C-3"] and frame["label (yours)"].tolist()[0] == "Watches"
    assert frame["status"].tolist() == ["scored", "scored", "skipped: no description and no usable image"]
    assert frame["label"].tolist()[2] == "" and frame["row"].tolist() == ["1", "2", "3"]


# --------------------------------------------------------------------------- models → import


@needs_flipkart
def test_models_import_of_a_flipkart_zip_guesses_the_mapping_and_says_what_changed(app_home):
    csv_bytes, zip_bytes, sample = flipkart_upload(leave_out=1)
    at = open_page(login("admin"), "models")
    at.file_uploader(key="import_csv").upload("products.csv", csv_bytes, "text/csv")
    at.file_uploader(key="import_zip").upload("photos.zip", zip_bytes, "application/zip")
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    assert at.multiselect(key="import_text_cols").value == ["product_name", "description"]
    assert at.selectbox(key="import_label_col").value == "product_category_tree"
    # a tree column: the whole path is learned (level 0), as deep as its nodes are still categories
    assert at.number_input(key="import_level").value == 0 and at.number_input(key="import_depth").value >= 1
    assert at.selectbox(key="import_image_col").value == "image"
    assert at.selectbox(key="import_id_col").value == "uniq_id"
    at.number_input(key="import_level").set_value(1)  # this admin wants the top level only: flat

    # a description as the photo column: refused, nothing added, no server path
    at.selectbox(key="import_image_col").select("description")
    button(at, "Import").click()
    at = ok(at.run())
    assert [e for e in errors(at) if "does not hold image file names" in e], errors(at)
    assert count("products") == 0
    assert_no_server_path(page_text(at), app_home.home)

    at.selectbox(key="import_image_col").select("image")
    button(at, "Import").click()
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    message = [s.value for s in at.success if s.value.startswith("Imported")]
    assert message and message[0].startswith(f"Imported “products”: {len(sample)} new products in 7 categories")
    assert "0 updated (label changed), 0 unchanged" in message[0]
    text = page_text(at)
    assert_no_server_path(text, app_home.home)
    assert f"file not found: flipkart/images/{sample['image'][0]}" in text  # the photo left out, named in the zip
    rows = store().query("SELECT external_id, true_label, image_hash FROM products ORDER BY id")
    assert [r["external_id"] for r in rows] == sample["uniq_id"].tolist()
    assert sum(r["image_hash"] is not None for r in rows) == len(sample) - 1
    assert {r["true_label"] for r in rows} == {"Home Furnishing", "Baby Care", "Watches", "Home Decor & Festive Needs",
                                               "Kitchen & Dining", "Beauty and Personal Care", "Computers"}

    # the same file again: nothing new, all unchanged
    button(at, "Import").click()
    at = ok(at.run())
    message = [s.value for s in at.success if s.value.startswith("Imported")]
    assert message[0] == (f"Imported “products”: 0 new products, 0 updated (label changed), {len(sample)} "
                          "unchanged; 0 rows skipped (no label, or neither text nor photo).")
    assert count("products") == len(sample)


def test_models_import_of_a_csv_without_labels_says_so(app_home):
    at = open_page(login("admin"), "models")
    at.file_uploader(key="import_csv").upload("plain.csv", b"title,price\nAcme watch dial,10\nZenith kettle,12\n",
                                              "text/csv")
    at = ok(at.run())
    assert at.multiselect(key="import_text_cols").value == ["title"]
    assert at.selectbox(key="import_label_col").value is None  # no column looks like a label: none pre-chosen
    button(at, "Import").click()
    at = ok(at.run())
    assert errors(at) == ["Import failed, nothing was added: plain.csv: training needs a label column"]
    assert count("products") == 0

    at.selectbox(key="import_label_col").select("title")  # every value its own class: imported, as asked
    at.selectbox(key="import_image_col").select("price")
    button(at, "Import").click()
    at = ok(at.run())
    assert errors(at) == [] and count("products") == 2


def test_models_import_from_a_folder_on_the_server(app_home, tmp_path):
    """The admin's other way in: a folder on the server, mapped by the same guesser."""
    import shutil

    folder = shutil.copytree(app_home.catalogue_csv.parent, tmp_path / "spring")  # the shared one stays intact
    (folder / "images" / sorted(p.name for p in (folder / "images").iterdir())[0]).rename(folder / "moved.png")
    at = open_page(login("admin"), "models")
    at.text_input(key="import_folder").input(str(folder))
    at = ok(at.run())
    assert at.multiselect(key="import_text_cols").value == ["title", "description"]
    assert (at.selectbox(key="import_label_col").value, at.selectbox(key="import_image_col").value) == ("category",
                                                                                                        "image")
    assert at.number_input(key="import_level").value == 0 and at.selectbox(key="import_id_col").value == "(none)"
    button(at, "Import").click()
    at = ok(at.run())
    assert errors(at) == [], errors(at)
    assert [s.value for s in at.success if s.value.startswith("Imported “products”: 42 new products in 3 categories")]
    missing = [c.value for c in at.caption if "file not found" in c.value]
    assert missing and all(str(folder) not in line for line in missing)  # named inside the folder, not by path

    # then a folder without a CSV, and a path that does not exist: a message, no mapping form, nothing added
    before = count("products")
    for wrong in (folder / "images", tmp_path / "nowhere"):
        at.text_input(key="import_folder").input(str(wrong))
        at = ok(at.run())
        assert errors(at) == [f"Cannot read the catalogue: no CSV file in {wrong}"]
        assert not [b for b in at.button if b.label == "Import"] and count("products") == before


# --------------------------------------------------------------------------- messages after a rerun


def test_promote_and_user_saved_messages_survive_the_rerun(app_home):
    other = second_bundle(app_home)
    at = open_page(login("admin"), "models")
    at.button(key="promote_button").click()
    at = ok(at.run())
    assert f"{other} is live." in [s.value for s in at.success]
    at = ok(at.run())  # shown once, not forever
    assert f"{other} is live." not in [s.value for s in at.success]

    at = open_page(at, "users")
    at.selectbox(key="edit_username").select("victor")
    at = ok(at.run())  # the form starts from victor's current values
    at.selectbox(key="edit_role-victor-viewer-0").select("reviewer")
    button(at, "Save").click()
    at = ok(at.run())
    assert [s.value for s in at.success] == ["Saved victor: now reviewer."]
    assert at.dataframe[0].value.set_index("username")["role"]["victor"] == "reviewer"


def add_job(state: str, *, minutes_ago: float = 0.0, error: str | None = None) -> int:
    """A `train` job row as a worker leaves it (a running one: a live pid, a fresh heartbeat)."""
    stamp = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")
    with store().transaction() as db:
        return db["jobs"].insert({"kind": "train", "state": state, "stage": "fit", "progress": 0.5, "message": "epoch 1",
                                  "params": json.dumps({}), "user": "admin", "pid": os.getppid(),
                                  "created_at": stamp, "started_at": stamp, "heartbeat_at": stamp,
                                  "finished_at": stamp if state == "failed" else None, "error": error}).last_pk


def set_failed(job_id: int, error: str) -> None:
    old = (datetime.now(timezone.utc) - timedelta(hours=5)).isoformat(timespec="milliseconds")
    with store().transaction() as db:
        db.execute("UPDATE jobs SET state = 'failed', error = ?, finished_at = ? WHERE id = ?", [error, old, job_id])


def test_a_failed_job_message_does_not_stick_forever(app_home):
    # an old failure nobody here watched: a quiet line, no error box
    add_job("failed", minutes_ago=300, error="out of memory")
    at = open_page(login("admin"), "models")
    assert not [e for e in errors(at) if "failed" in e]
    assert [c.value for c in at.caption if c.value.startswith("The last training (#1")]

    # a fresh failure: shown to everyone, until dismissed
    add_job("failed", minutes_ago=1, error="disk full.")
    at = ok(at.run())
    assert [e for e in errors(at) if e == "Training #2 failed: disk full. The live model is unchanged."]
    at.button(key="train_dismiss").click()
    at = ok(at.run())
    assert not [e for e in errors(at) if "failed" in e]
    assert [c.value for c in at.caption if c.value.startswith("The last training (#2")]

    # a job this session watched while it ran: its failure stays until dismissed, however old
    job = add_job("running")
    at = ok(at.run())
    assert not [e for e in errors(at) if "failed" in e]
    set_failed(job, "the worker stopped")
    at = ok(at.run())
    assert [e for e in errors(at) if e.startswith(f"Training #{job} failed: the worker stopped.")]
    at = ok(at.run())
    assert [e for e in errors(at) if e.startswith(f"Training #{job} failed")]
    at.button(key="train_dismiss").click()
    at = ok(at.run())
    assert not [e for e in errors(at) if "failed" in e]


# --------------------------------------------------------------------------- in a real browser


@pytest.mark.slow  # 23 s: the browser over the real Flipkart files (AppTest scores uploads in the default run)
@needs_flipkart
@pytest.mark.skipif(chromium_path() is None, reason="Debian chromium is not installed")
def test_browser_batch_upload_of_a_flipkart_csv_and_zip(app_home, tmp_path):
    csv_bytes, zip_bytes, sample = flipkart_upload()
    (tmp_path / "products.csv").write_bytes(csv_bytes)
    (tmp_path / "photos.zip").write_bytes(zip_bytes)
    with streamlit_server(app_home.env(), tmp_path / "streamlit.log") as url, browser_page() as page:
        try:
            log_in(page, url, "rita", PASSWORDS["rita"])
            page.get_by_role("link", name="Batch").click()
            page.get_by_text("Score a batch").first.wait_for(timeout=60_000)
            inputs = page.locator("input[type=file]")
            inputs.nth(1).set_input_files(str(tmp_path / "photos.zip"))  # the zip first: staged with the CSV
            page.get_by_text("photos.zip").first.wait_for(timeout=30_000)
            inputs.nth(0).set_input_files(str(tmp_path / "products.csv"))
            page.get_by_text(f"{len(sample):,} rows · columns:").wait_for(timeout=60_000)
            page.get_by_role("button", name="Score the batch").click()
            page.get_by_text(f"Scored {len(sample):,} products").wait_for(timeout=60_000)
            page.locator("[data-testid=stDataFrame]").first.wait_for()
            body = page.locator("body").inner_text()
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
    assert_no_server_path(body, app_home.home)
    assert "0 rows skipped" in body
    assert count("images") == len(sample)  # the photos were found in the zip's folder
