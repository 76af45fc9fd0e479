"""Data browser: find any product by its text, labels, source, confidence, disagreement,
reviewer or status; open its whole history; bulk-accept the confident ones of the current
filter (previewed, confirmed, undoable); export the labelled dataset and the decision log.

Everyone who may watch the monitor browses; bulk accept and export need a reviewer.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.studio.browse import (
    DISAGREEMENTS,
    LABEL_KINDS,
    ORDERS,
    STATUSES,
    BrowseFilters,
    count_products,
    filter_options,
    matching_ids,
    product_history,
    search_products,
)
from core.studio.bulk import bulk_accept, get_bulk, preview_bulk_accept, undo_bulk
from core.studio.export import FORMATS, decision_log, labelled_dataset, table_bytes
from pages._ui.flash import flash, show_flash
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors, percent

user = require_page("monitor")
st.title("Data browser")
show_flash("browse")

ANY = "any"
words = lambda value: value.replace("_", " ")  # noqa: E731 - identifiers as the page shows them
PAGE_SIZES = [25, 50, 100, 250]

# -- filters --------------------------------------------------------------------------------
options = filter_options(store(), user)
search, kind_col, label_col, status_col, source_col = st.columns([3, 1.3, 2, 1.6, 1.6])
text = search.text_input("Search", key="browse_text", placeholder="words of the description, or a catalogue id")
label_kind = kind_col.selectbox("Label of", LABEL_KINDS, key="browse_label_kind", format_func=words,
                                help="effective: the label training uses (the settled decision, else the "
                                     "catalogue's); any: catalogue, predicted or effective")
label = label_col.selectbox("Label", [ANY, *options.labels], key="browse_label")
status = status_col.selectbox("Status", [ANY, *STATUSES], key="browse_status",
                              format_func=lambda s: "has a viewer's suggestion" if s == "suggested" else words(s))
source = source_col.selectbox("Source", [ANY, *options.sources], key="browse_source")
with st.expander("More filters and order"):
    conf_col, dis_col, reviewer_col, eval_col, order_col = st.columns(5)
    low, high = conf_col.slider("Confidence of the latest prediction", 0.0, 1.0, (0.0, 1.0), 0.05,
                                key="browse_confidence", format="%.2f")
    disagreement = dis_col.selectbox("Disagreement", [ANY, *DISAGREEMENTS], key="browse_disagreement",
                                     format_func=lambda d: {"text_vs_image": "description ≠ photo",
                                                            "catalogue_vs_predicted": "catalogue ≠ prediction",
                                                            "any": "either"}.get(d, d))
    reviewer = reviewer_col.selectbox("Decided by", [ANY, *options.reviewers], key="browse_reviewer")
    eval_choice = eval_col.selectbox("Evaluation slice", [ANY, "only", "excluded"], key="browse_eval",
                                     format_func=lambda e: {"only": "only the evaluation slice",
                                                            "excluded": "without the evaluation slice"}.get(e, e))
    order = order_col.selectbox("Order", list(ORDERS), key="browse_order", format_func=words)
page_size = st.session_state.get("browse_page_size", 50)

pick = lambda value: None if value == ANY else value  # noqa: E731
filters = BrowseFilters(
    text=text, label=pick(label), label_kind=label_kind, source=pick(source),
    min_confidence=low if (low, high) != (0.0, 1.0) else None,
    max_confidence=high if (low, high) != (0.0, 1.0) else None,
    disagreement=pick(disagreement), reviewer=pick(reviewer), status=pick(status),
    eval_slice={"only": True, "excluded": False}.get(eval_choice), order=order, limit=page_size)

# -- the table ------------------------------------------------------------------------------
frame = None
with friendly_errors("Could not search: "):
    total = count_products(store(), user, filters)
    pages = max(1, -(-total // page_size))
    signature = repr({k: v for k, v in filters.__dict__.items() if k != "offset"})
    if st.session_state.get("browse_signature", signature) != signature:
        st.session_state["browse_page"] = 1  # other filters: back to the first page of their results
    st.session_state["browse_signature"] = signature
    st.session_state["browse_page"] = min(st.session_state.get("browse_page", 1), pages)
    filters.offset = (st.session_state.get("browse_page", 1) - 1) * page_size
    frame = search_products(store(), user, filters)

if frame is not None:
    first = filters.offset + 1 if total else 0
    st.caption(f"**{total:,}** product{'s' if total != 1 else ''} match ({filters.describe()}) · "
               f"showing {first:,}–{filters.offset + len(frame):,}")
    st.session_state["browse_page_ids"] = frame["product_id"].tolist()

    def _on_select() -> None:
        """A row picked in the table opens that product's history."""
        rows = st.session_state["browse_table"].selection.rows
        ids = st.session_state.get("browse_page_ids", [])
        if rows and rows[0] < len(ids):
            st.session_state["browse_product"] = ids[rows[0]]

    shown = frame.assign(eval_slice=frame["eval_slice"].map({True: "eval", False: ""}))
    st.dataframe(
        shown, key="browse_table", on_select=_on_select, selection_mode="single-row", hide_index=True,
        width="stretch",
        column_order=["product_id", "text", "label", "label_source", "status", "predicted_label", "confidence",
                      "catalogue_label", "disagree", "reviewer", "source", "eval_slice", "suggestions",
                      "model_version", "external_id"],
        column_config={
            "product_id": st.column_config.NumberColumn("id", format="%d"),
            "text": st.column_config.TextColumn("description", width="medium"),
            "label": "label", "label_source": "from", "predicted_label": "predicted", "catalogue_label": "catalogue",
            "model_version": "model", "external_id": "catalogue id",
            "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0,
                                                          format="percent"),
            "disagree": st.column_config.CheckboxColumn("text ≠ image"),
            "eval_slice": "slice", "suggestions": st.column_config.NumberColumn("suggestions", format="%d"),
        })
    nav_page, nav_size, _ = st.columns([1, 1, 4])
    nav_page.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="browse_page")
    nav_size.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(50), key="browse_page_size")

# -- one product's history ------------------------------------------------------------------
st.subheader("Product history")
st.columns([1, 3])[0].number_input("Product id (or pick a row above)", min_value=1, step=1, value=None,
                                   key="browse_product", placeholder="e.g. 42")
product_id = st.session_state.get("browse_product")
if product_id is None:
    st.caption("Pick a row in the table to see every prediction and decision of that product.")
else:
    with friendly_errors():
        history = product_history(store(), user, int(product_id))
        product = history.product
        photo, about = st.columns([1, 3])
        if product["image_path"] is not None:
            photo.image(str(product["image_path"]), width="stretch")
        else:
            photo.caption("No photo")
        about.markdown(f"**Product {product['id']}** · source {product['source'] or '–'}"
                       + (f" · catalogue id {product['external_id']}" if product["external_id"] else "")
                       + (" · evaluation slice" if product["split"] == "eval" else ""))
        about.write(product["text"] or "_no description_")
        label_text = {"out_of_scope": "out of scope (no category fits)", None: "none yet"}.get(
            product["label_source"], f"**{product['label']}** (from the {product['label_source']})")
        about.markdown(f"Label: {label_text} · status {words(product['status'])}"
                       + (f" · catalogue said **{product['true_label']}**" if product["true_label"] else ""))
        if history.top:
            about.caption("Latest prediction: " + " · ".join(f"{name} {percent(p)}" for name, p in history.top))
        tabs = st.tabs([f"Predictions ({len(history.predictions)})", f"Decisions ({len(history.decisions)})",
                        f"Suggestions ({len(history.suggestions)})", f"Bulk actions ({len(history.bulk_actions)})"])
        for tab, table, empty in zip(tabs, (history.predictions, history.decisions, history.suggestions,
                                            history.bulk_actions),
                                     ("Never predicted (a catalogue item).", "Nobody decided it yet.",
                                      "No viewer suggested a label.", "No bulk action touched it.")):
            if table.empty:
                tab.caption(empty)
            else:
                tab.dataframe(table, hide_index=True, width="stretch")

# -- bulk accept (reviewers) ----------------------------------------------------------------
if user.can("review") and frame is not None:
    st.subheader("Bulk accept")
    st.caption("Accept the predicted label of every undecided product **in the current filter** (all pages) "
               "whose latest prediction is at least this confident. Each becomes your decision, and the whole "
               "action can be undone.")
    threshold = st.slider("Confidence at least", 0.5, 1.0, 0.95, 0.01, key="bulk_threshold", format="%.2f")
    with friendly_errors("Could not preview: "):
        preview = preview_bulk_accept(store(), user, matching_ids(store(), user, filters), threshold)
        # a click answers the previous run's preview: accept what was shown, not what arrived since
        shown_threshold, shown_ids = st.session_state.get("bulk_shown", (None, []))
        st.session_state["bulk_shown"] = (threshold, preview.product_ids)
        st.markdown(f"**{preview.count:,}** of the {preview.selected:,} products in the filter would be accepted.")
        if preview.per_class:
            st.bar_chart(pd.Series(preview.per_class, name="products").rename_axis("class"), horizontal=True,
                         height=min(60 + 28 * len(preview.per_class), 400))
        bulk_round = st.session_state.get("bulk_round", 0)  # a fresh (unticked) confirmation after each action
        confirmed = st.checkbox(f"I checked: accept these {preview.count:,} predictions as my decisions",
                                key=f"bulk_confirm_{bulk_round}", disabled=preview.count == 0)
        if st.button("Accept them all", type="primary", key="bulk_accept", disabled=not confirmed):
            with friendly_errors("Nothing was accepted: "):
                chosen = shown_ids if shown_threshold == threshold else preview.product_ids
                bulk_id = bulk_accept(store(), user, chosen, threshold, filters.describe())
                done = get_bulk(store(), user, bulk_id)
                st.session_state.update(browse_last_bulk=bulk_id, bulk_round=bulk_round + 1)
                flash("browse", f"Accepted {done.count:,} products (bulk action {bulk_id}).")
                st.rerun()

    last = st.session_state.get("browse_last_bulk")
    if last is not None:
        with friendly_errors():
            done = get_bulk(store(), user, last)
            if done.undone_at is None:
                st.info(f"Bulk action {done.id}: {done.count:,} products accepted at ≥ {done.threshold:.0%} "
                        f"({done.filter or 'all products'}).", icon=":material/done_all:")
                if st.button("Undo this bulk action", key="bulk_undo", icon=":material/undo:"):
                    with friendly_errors("Could not undo: "):
                        result = undo_bulk(store(), user, last)
                        kept = (f"; {result.kept:,} kept because someone decided them afterwards"
                                if result.kept else "")
                        flash("browse", f"Undid {result.undone:,} decisions{kept}.")
                        st.session_state.pop("browse_last_bulk")
                        st.rerun()

# -- export (reviewers) ---------------------------------------------------------------------
if user.can("review"):
    st.subheader("Export")
    st.caption("One row per labelled product (id, text, photo path, effective label, where it came from, "
               "evaluation slice), or every decision ever made, undone ones included.")
    db = store()  # the downloads are built on click, in another thread: no st.* calls there
    columns = st.columns(4)
    downloads = [(name, build, suffix) for name, build in (("labelled_dataset", labelled_dataset),
                                                           ("decision_log", decision_log)) for suffix in FORMATS]
    for column, (name, build, suffix) in zip(columns, downloads):
        column.download_button(
            f"{words(name).capitalize()} ({suffix[1:].upper()})", key=f"export_{name}_{suffix[1:]}",
            data=lambda build=build, suffix=suffix: table_bytes(build(db, user), suffix),
            file_name=f"{name}{suffix}", mime=FORMATS[suffix], on_click="ignore", icon=":material/download:")
