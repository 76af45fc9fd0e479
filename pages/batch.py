"""Batch: a CSV of products (+ a zip of their photos), columns mapped like the CLI's
flags (guessed from the values by core.data.columns, confirmed by the user), scored with a
progress bar. Every scored product enters the review queue."""

from __future__ import annotations

import streamlit as st

from core.studio.batch import discard_upload, load_staged, score_batch, stage_upload, to_csv_bytes
from pages._ui.model import live_classifier
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors

ENCODINGS = ["utf-8", "latin-1", "cp1252", "utf-16"]
NONE = "(none)"
MAPPING_KEYS = ("batch_text_cols", "batch_image_col")

user = require_page("batch")
st.title("Score a batch")
classifier, model = live_classifier()
if classifier is None:
    st.stop()

st.markdown("Upload a CSV with one product per row, and optionally a **zip** of the photos it names.")
csv_col, zip_col = st.columns(2)
csv_file = csv_col.file_uploader("Products (CSV)", type=["csv"], key="batch_csv")
zip_file = zip_col.file_uploader("Photos (zip, optional)", type=["zip"], key="batch_zip")
encoding = csv_col.selectbox("CSV encoding", ENCODINGS, key="batch_encoding")

if csv_file is None:
    discard_upload((st.session_state.pop("batch_staged", None) or (None, None))[1])
    st.stop()

upload_id = (csv_file.file_id, zip_file.file_id if zip_file else None, encoding)
staged = st.session_state.get("batch_staged")
if staged is None or staged[0] != upload_id:
    discard_upload(staged[1] if staged else None)  # another file: the last one's copy goes
    staged = None
    with st.spinner("Reading the upload…"), friendly_errors("Cannot read the upload: "):
        staged = (upload_id, stage_upload(csv_file.getvalue(), csv_file.name,
                                          zip_file.getvalue() if zip_file else None, encoding))
        st.session_state["batch_staged"] = staged
        st.session_state.pop("batch_result", None)
        for key in MAPPING_KEYS:  # a new file gets its own guessed mapping, not the last file's
            st.session_state.pop(key, None)
    if staged is None:
        st.stop()
upload = staged[1]
st.caption(f"{upload.rows:,} rows · columns: {', '.join(upload.columns)}")

with st.form("batch_map"):
    cols, guess = upload.columns, upload.guess
    text_cols = st.multiselect("Text columns (joined in this order)", cols, default=guess.text,
                               key="batch_text_cols")
    image_options = [NONE] + cols
    image_col = st.selectbox("Image column", image_options, key="batch_image_col",
                             index=image_options.index(guess.image) if guess.image else 0)
    go = st.form_submit_button("Score the batch", type="primary")

if go:
    st.session_state.pop("batch_result", None)
    bar = st.progress(0.0, text="Checking rows and photos…")
    with friendly_errors("Cannot score this batch: "):
        if not upload.csv_path.exists():  # removed after the last scoring: the same files, staged again
            upload = stage_upload(csv_file.getvalue(), csv_file.name, zip_file.getvalue() if zip_file else None,
                                  encoding)
            st.session_state["batch_staged"] = (upload_id, upload)
        try:
            catalogue = load_staged(upload, text_cols=text_cols,
                                    image_col=None if image_col == NONE else image_col, encoding=encoding)
            st.session_state["batch_report"] = upload.report_lines(catalogue)
            result = score_batch(store(), classifier, user, catalogue,
                                 on_progress=lambda fraction, message: bar.progress(fraction, text=message))
            st.session_state["batch_result"] = result
        finally:
            discard_upload(upload)  # the photos are stored by now: the staged copy is not needed

result = st.session_state.get("batch_result")
if result is not None:
    for line in st.session_state.get("batch_report", []):
        st.caption(line)
    frame = result.frame
    flagged = int(frame["disagree"].fillna(False).astype(bool).sum())
    known = result.scored - result.new_products
    st.success(f"Scored {result.scored:,} products ({result.skipped:,} rows skipped): {result.new_products:,} new"
               + (f", {known:,} already known (their new prediction was added to them)" if known else "")
               + f"; {flagged:,} where the description and the photo disagree. Products nobody has decided yet are "
               "in the review queue.")
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "label": st.column_config.TextColumn("predicted label"),
        "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0, format="percent"),
        "disagree": st.column_config.CheckboxColumn("text ≠ image"),
    })
    st.download_button("Download results (CSV)", to_csv_bytes(frame), file_name="batch_predictions.csv",
                       mime="text/csv", key="batch_download")
