"""Batch: a CSV of products (+ a zip of their photos), columns mapped like the CLI's
flags, scored with a progress bar. Every scored product enters the review queue."""

from __future__ import annotations

import streamlit as st

from core.batch import load_staged, score_batch, stage_upload, to_csv_bytes
from pages._shared import friendly_errors, live_classifier, require_page, store

ENCODINGS = ["utf-8", "latin-1", "cp1252", "utf-16"]

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
    st.session_state.pop("batch_staged", None)
    st.stop()

upload_id = (csv_file.file_id, zip_file.file_id if zip_file else None, encoding)
staged = st.session_state.get("batch_staged")
if staged is None or staged[0] != upload_id:
    staged = None
    with st.spinner("Reading the upload…"), friendly_errors("Cannot read the upload: "):
        staged = (upload_id, stage_upload(csv_file.getvalue(), csv_file.name,
                                          zip_file.getvalue() if zip_file else None, encoding))
        st.session_state["batch_staged"] = staged
        st.session_state.pop("batch_result", None)
    if staged is None:
        st.stop()
upload = staged[1]
st.caption(f"{upload.rows:,} rows · columns: {', '.join(upload.columns)}")


def guess(options: list[str], *names: str) -> list[str]:
    return [c for c in options if c.lower() in names]


with st.form("batch_map"):
    cols = upload.columns
    text_cols = st.multiselect("Text columns (joined in this order)", cols,
                               default=guess(cols, "title", "name", "product_name", "description", "text",
                                             "product_title", "productdisplayname"), key="batch_text_cols")
    image_options = ["(none)"] + cols
    image_default = next((image_options.index(c) for c in guess(cols, "image", "image_path", "photo", "img", "file")),
                         0)
    image_col = st.selectbox("Image column", image_options, index=image_default, key="batch_image_col")
    go = st.form_submit_button("Score the batch", type="primary")

if go:
    st.session_state.pop("batch_result", None)
    bar = st.progress(0.0, text="Checking rows and photos…")
    with friendly_errors("Cannot score this batch: "):
        catalogue = load_staged(upload, text_cols=text_cols, image_col=None if image_col == "(none)" else image_col,
                                encoding=encoding)
        for line in catalogue.report.summary_lines()[:8]:
            st.caption(line)
        result = score_batch(store(), classifier, user, catalogue,
                             on_progress=lambda fraction, message: bar.progress(fraction, text=message))
        st.session_state["batch_result"] = result

result = st.session_state.get("batch_result")
if result is not None:
    frame = result.frame
    flagged = int(frame["disagree"].fillna(False).astype(bool).sum()) if "disagree" in frame else 0
    st.success(f"Scored {result.scored:,} products ({result.skipped:,} rows skipped); {flagged:,} where the "
               "description and the photo disagree. All of them are now in the review queue.")
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0, format="percent"),
        "disagree": st.column_config.CheckboxColumn("text ≠ image"),
    })
    st.download_button("Download results (CSV)", to_csv_bytes(frame), file_name="batch_predictions.csv",
                       mime="text/csv", key="batch_download")
