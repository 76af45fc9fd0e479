"""Review queue: one product at a time, hardest first. Accept, correct or skip; the next
item follows at once. The item shown is claimed, so no other reviewer gets it meanwhile."""

from __future__ import annotations

import streamlit as st

from core.review_queue import DEFAULT_ORDER, ORDERS, SUSPECTS, claim_next, pending_count, record_review
from pages._shared import friendly_errors, live_classifier, percent, require_page, show_explanation, store

user = require_page("review")
st.title("Review queue")

order = st.segmented_control("Order", [*ORDERS, SUSPECTS], default=DEFAULT_ORDER, key="queue_order") or DEFAULT_ORDER
left = pending_count(store(), user, order)
st.caption(f"**{left}** item{'s' if left != 1 else ''} left for you")
if msg := st.session_state.pop("review_flash", None):
    st.toast(msg, icon=":material/check_circle:")

with friendly_errors():
    item = claim_next(store(), user, order)
    if item is None:
        st.success("Nothing left to review. New predictions and batches land here.")
        st.stop()

    image_col, text_col = st.columns([1, 2])
    if item.image_path is not None:
        image_col.image(str(item.image_path), width="stretch")
    else:
        image_col.caption("No photo")
    checked_by = "out-of-fold label check" if order == SUSPECTS else f"model {item.model_version}"
    text_col.markdown(f"**Product {item.product_id}** · {checked_by} · source {item.source or '–'}")
    text_col.write(item.text or "_no description_")
    if item.disagree:
        text_col.warning("The description and the photo point to different categories.", icon=":material/warning:")
    if order == SUSPECTS:
        text_col.warning(f"The catalogue says **{item.label}**; models that never saw this item suggest "
                         f"**{item.extra['suggested_label']}** (suspect score {item.extra['suspect_score']:.2f}).",
                         icon=":material/search_check:")

    st.markdown("**Suggestions**")
    top = item.top(3)
    for rank, (label, prob) in enumerate(top, 1):
        st.progress(prob, text=f"{rank}. {label} — {percent(prob)}")

    def decide(decision: str, new_label: str | None = None) -> None:
        with friendly_errors("Could not save: "):
            record_review(store(), user, item.product_id, decision, new_label=new_label,
                          prediction_id=item.prediction_id)
            st.session_state["review_flash"] = {"accept": f"Accepted {item.label}",
                                                "correct": f"Corrected to {new_label}",
                                                "skip": "Skipped"}[decision]
            st.session_state.pop("review_explanation", None)
            st.rerun()

    accept_col, skip_col, _ = st.columns([2, 1, 3])
    if accept_col.button(f"{'Keep' if order == SUSPECTS else 'Accept'} “{item.label}”", type="primary",
                         key="review_accept"):
        decide("accept")
    if skip_col.button("Skip", key="review_skip"):
        decide("skip")
    with st.form(f"correct_{item.product_id}"):
        others = ([label for label, _ in top if label != item.label]
                  + sorted(set(item.labels) - {label for label, _ in top} - {item.label}))
        new_label = st.selectbox("Correct to", others, index=None, placeholder="Type to search a category…",
                                 key="review_label")
        note = st.text_input("Note (optional)", key="review_note")
        if st.form_submit_button("Save correction") and new_label:
            with friendly_errors("Could not save: "):
                record_review(store(), user, item.product_id, "correct", new_label=new_label, note=note,
                              prediction_id=item.prediction_id)
                st.session_state["review_flash"] = f"Corrected to {new_label}"
                st.session_state.pop("review_explanation", None)
                st.rerun()

    if st.toggle("Explain this prediction", key="review_explain"):
        classifier, _ = live_classifier()
        if classifier is not None:
            cached = st.session_state.get("review_explanation")
            if cached is None or cached[0] != item.product_id:
                from core.explain.service import explainer_for

                with st.spinner("Explaining…"):
                    explanation = explainer_for(classifier).explain(
                        text=item.text or None, image=item.image_path, class_label=item.label
                        if item.label in classifier.labels else None)
                st.session_state["review_explanation"] = (item.product_id, explanation)
            explanation = st.session_state["review_explanation"][1]
            st.caption(explanation.modality.summary + (f" (explained with the live model "
                                                       f"{classifier.version})" if classifier.version !=
                                                       item.model_version else ""))
            show_explanation(explanation, "review")
