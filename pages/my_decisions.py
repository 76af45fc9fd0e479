"""My decisions: every decision I made, newest first, searchable; undo the last one or
change any of them (the old decision is kept, marked undone, and the change is audited)."""

from __future__ import annotations

import streamlit as st

from core.studio.review_queue import categories_of, change_decision, my_decisions, undo_last
from core.studio.store import SETTLING
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors

DECISION_NAMES = {"accept": "Accept", "correct": "Correct", "out_of_scope": "Out of scope", "skip": "Skip"}

user = require_page("review")
st.title("My decisions")
if flash := st.session_state.pop("decisions_flash", None):
    st.toast(flash, icon=":material/check_circle:")

search_col, kind_col, undone_col = st.columns([3, 3, 1], vertical_alignment="bottom")
search = search_col.text_input("Search", key="decisions_search", placeholder="Words of the product, a label, a note…")
kind = kind_col.segmented_control("Decision", list(DECISION_NAMES), format_func=DECISION_NAMES.get,
                                  key="decisions_kind")
include_undone = undone_col.toggle("Undone too", key="decisions_undone")

with friendly_errors():
    frame = my_decisions(store(), user, search=search, decision=kind, include_undone=include_undone)
    if frame.empty:
        st.info("No decision matches." if search or kind else "You have not decided anything yet: the "
                "**Review queue** is where decisions are made.")
        st.stop()
    st.caption(f"{len(frame):,} decision{'s' if len(frame) != 1 else ''} · select one to change it")
    shown = frame.assign(decision=frame["decision"].map(DECISION_NAMES), undone=frame["undone"].astype(bool),
                         text=frame["text"].str.slice(0, 120))
    columns = ["created_at", "product_id", "text", "decision", "old_label", "new_label", "note"]
    picked = st.dataframe(shown, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                          key="decisions_table", column_order=columns + (["undone"] if include_undone else []),
                          column_config={
                              "review_id": st.column_config.NumberColumn("#", format="%d"),
                              "product_id": st.column_config.NumberColumn("product", format="%d"),
                              "created_at": st.column_config.DatetimeColumn("when", format="YYYY-MM-DD HH:mm"),
                              "old_label": "predicted", "new_label": "label"})

    if st.button("Undo my last decision", key="decisions_undo", icon=":material/undo:"):
        undone = undo_last(store(), user)
        st.session_state["decisions_flash"] = (f"Undid your {undone.decision.replace('_', ' ')} of product "
                                               f"{undone.product_id}: it is back in your queue"
                                               if undone else "Nothing to undo")
        st.rerun()

    rows = picked.selection.rows if picked else []
    if rows:
        chosen = frame.iloc[rows[0]]
        review_id, product_id = int(chosen["review_id"]), int(chosen["product_id"])
        st.subheader(f"Change decision #{review_id} on product {product_id}")
        st.text(chosen["text"])
        if bool(chosen["undone"]):
            st.info("This decision was undone; change the current one instead.")
            st.stop()
        with st.form(f"change_{review_id}"):
            decision = st.segmented_control("New decision", list(SETTLING), format_func=DECISION_NAMES.get,
                                            default="correct", key=f"change_decision_{review_id}")
            label = st.selectbox("Category (for Correct)", categories_of(store(), product_id), index=None,
                                 placeholder="Type to search a category…", key=f"change_label_{review_id}")
            note = st.text_input("Why (optional)", key=f"change_note_{review_id}")
            if st.form_submit_button("Save the change", type="primary"):
                if decision == "correct" and not label:
                    st.error("Choose the category to correct to.")
                    st.stop()
                change_decision(store(), user, review_id, decision or "correct", new_label=label, note=note)
                st.session_state["decisions_flash"] = f"Decision on product {product_id} changed"
                st.rerun()
