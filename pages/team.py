"""Team (admins): how each reviewer works — decisions by kind, speed, agreement with the
others and with the model — and the products two reviewers decided differently, each
settled here by an admin's own decision."""

from __future__ import annotations

import streamlit as st

from core.studio.team import OUT_OF_SCOPE, disagreements, reviewer_stats, settle_disagreement
from pages._ui.flash import flash, show_flash
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors

user = require_page("users")
st.title("Team")
show_flash("team")

# -- per reviewer ---------------------------------------------------------------------------
stats = reviewer_stats(store(), user)
if stats.empty:
    st.info("Nobody has decided anything yet. Reviewers' numbers appear here after their first decisions.")
else:
    st.caption("Decisions not undone; speed is the median time between two consecutive decisions of one "
               "reviewer (bulk accepts left out); agreement compares a decision with later decisions of "
               "others on the same product, and with the model's prediction.")
    st.dataframe(stats, hide_index=True, width="stretch", column_config={
        "median_seconds": st.column_config.NumberColumn("median s / decision", format="%.1f"),
        "agreement_with_others": st.column_config.ProgressColumn("agrees with others", min_value=0.0,
                                                                 max_value=1.0, format="percent"),
        "out_of_scope": "out of scope",
        "compared_with_others": st.column_config.NumberColumn("n (others)", format="%d"),
        "agreement_with_model": st.column_config.ProgressColumn("agrees with the model", min_value=0.0,
                                                                max_value=1.0, format="percent"),
        "compared_with_model": st.column_config.NumberColumn("n (model)", format="%d"),
    })
    kinds = stats.set_index("reviewer")[["accepts", "corrections", "out_of_scope", "skips"]]
    st.bar_chart(kinds.rename(columns={"out_of_scope": "out of scope"}), horizontal=True, stack=True,
                 height=min(80 + 36 * len(kinds), 420), x_label="", y_label="decisions")

# -- disagreements --------------------------------------------------------------------------
st.subheader("Disagreements")
open_items = disagreements(store(), user)
if open_items.empty:
    st.success("No open disagreements: every product two reviewers decided differently has been settled.")
    st.stop()

st.caption(f"**{len(open_items):,}** product{'s' if len(open_items) != 1 else ''} where reviewers' latest "
           "decisions differ. Training uses the latest decision until an admin settles it.")
st.dataframe(open_items.drop(columns=["latest_review_id", "labels"]), hide_index=True, width="stretch",
             column_config={"product_id": st.column_config.NumberColumn("id", format="%d"),
                            "text": st.column_config.TextColumn("description", width="large"),
                            "label": "current label", "label_source": "from", "predicted_label": "predicted"})

rows = {int(r["product_id"]): r for r in open_items.to_dict("records")}
# A click is an answer to the previous run's screen: settle against the decision shown there,
# so a reviewer's decision made meanwhile is reported instead of silently overruled.
shown_before = st.session_state.get("team_seen", {})
st.session_state["team_seen"] = {pid: int(r["latest_review_id"]) for pid, r in rows.items()}
product_id = st.selectbox("Settle product", list(rows), key="team_product",
                          format_func=lambda pid: f"{pid} — {rows[pid]['decisions']}")
row = rows[product_id]
# keyed by the product, so one product's choice never carries over to the next
choices = list(dict.fromkeys([*row["labels"], *([row["predicted_label"]] if row["predicted_label"] else [])]))
label = st.radio("The right label", choices, index=None, key=f"team_label_{product_id}", horizontal=True,
                 format_func=lambda c: "out of scope (no category fits)" if c == OUT_OF_SCOPE else c)
note = st.text_input("Note (optional)", key=f"team_note_{product_id}")
if st.button("Settle", type="primary", key=f"team_settle_{product_id}", icon=":material/gavel:"):
    if label is None:
        st.error("Pick the right label first.")
    else:
        with friendly_errors("Could not settle: "):
            seen = shown_before.get(product_id, int(row["latest_review_id"]))
            settle_disagreement(store(), user, product_id, label, seen_review_id=seen, note=note or None)
            flash("team", f"Product {product_id} settled as {label}.")
            st.rerun()
