"""Review queue: one product at a time, hardest first, on the keyboard. Accept, pick a
suggestion, correct, mark out of scope, skip or undo; the next item follows at once. The
item shown is claimed, so no other reviewer gets it meanwhile, and every widget is keyed
by the item: nothing carries over from one product to the next. Buttons keep one key each
(a stale button of the previous item would otherwise answer the same shortcut too), and
run their decision as a callback bound to the item they were drawn with."""

from __future__ import annotations

import streamlit as st

from core.common.category_path import category_choices
from core.common.errors import InputError, one_line
from core.studio.auth import PermissionDenied
from core.studio.review_queue import (
    DEFAULT_ORDER,
    ORDER_LABELS,
    SUSPECTS,
    DecisionConflict,
    claim_next,
    level_order,
    pending_count,
    record_review,
    release,
    suspects_ran,
    undo_last,
)
from core.studio.registry import live_model
from pages._ui.model import live_classifier
from pages._ui.session import require_page, store
from pages._ui.widgets import focus_key, friendly_errors, percent, show_explanation

user = require_page("review")
st.title("Review queue")

order_col, level_col = st.columns([4, 1], vertical_alignment="bottom")
order = order_col.segmented_control("Order", list(ORDER_LABELS), format_func=ORDER_LABELS.get,
                                    default=DEFAULT_ORDER, key="queue_order") or DEFAULT_ORDER
live = live_model(store())
depth = int(((live.metadata.tree if live is not None else None) or {}).get("depth") or 1)
if order == "least_confidence" and depth > 1:  # a category tree: least confident at which level?
    level = level_col.selectbox("At level", ["whole path", *range(1, depth + 1)], key="queue_level",
                                help="Order by the confidence of one level of the predicted path: level 1 "
                                     "finds the products whose department itself is in doubt.")
    if level != "whole path":
        order = level_order(int(level))
if st.session_state.get("queue_order_shown", order) != order:
    release(store(), user)  # another order: give the current item back, show that order's first
st.session_state["queue_order_shown"] = order

left = pending_count(store(), user, order)
st.caption(f"**{left}** item{'s' if left != 1 else ''} left for you · keys: **A** accept · **1 2 3** pick a "
           "suggestion · **/** correct to… · **O** out of scope · **S** skip · **Z** undo")
if flash := st.session_state.pop("review_flash", None):
    text, icon = flash if isinstance(flash, tuple) else (flash, ":material/check_circle:")
    st.toast(text, icon=icon)
if warning := st.session_state.pop("review_warning", None):
    st.warning(warning, icon=":material/group:")


def undo() -> None:
    """Button callback: undo the user's last decision; that item becomes current again."""
    with friendly_errors("Could not undo: "):
        undone = undo_last(store(), user)
        st.session_state["review_flash"] = ((f"Undid your {undone.decision.replace('_', ' ')} of product "
                                             f"{undone.product_id}", ":material/undo:") if undone else
                                            ("Nothing to undo", ":material/info:"))


def decide(item, decision: str, new_label: str | None = None, *, from_form: bool = False) -> None:
    """Button callback, so it runs with the item that was on screen when the key was
    pressed, before the page claims the next one. A decision overtaken by someone else's
    (this reviewer's claim expired meanwhile) is refused and said so; nothing is written."""
    pid = item.product_id
    note = None
    if from_form:
        new_label = st.session_state.get(f"review_label_{pid}")
        note = st.session_state.get(f"review_note_{pid}")
        if not new_label:
            st.session_state["review_error"] = "Choose the right category first (press / and type part of its name)."
            return
    try:
        record_review(store(), user, pid, decision, new_label=new_label, note=note,
                      prediction_id=item.prediction_id, seen_review_id=item.seen_review_id)
    except DecisionConflict as exc:
        st.session_state["review_warning"] = f"Not saved: {one_line(exc)}."
        return
    except (InputError, PermissionDenied) as exc:
        st.session_state["review_error"] = f"Could not save: {one_line(exc)}"
        return
    st.session_state["review_flash"] = {
        "accept": f"Product {pid}: accepted {item.label}",
        "correct": f"Product {pid}: corrected to {new_label}",
        "out_of_scope": f"Product {pid}: out of scope",
        "skip": f"Product {pid}: skipped (it comes back after the others)"}[decision]
    st.session_state.pop("review_explanation", None)


if error := st.session_state.pop("review_error", None):
    st.error(error)

with friendly_errors():
    item = claim_next(store(), user, order)
    if item is None:
        if order == SUSPECTS and not suspects_ran(store()):
            st.info("No label check yet: run **Find suspected mislabels** on the Models page first "
                    "(admins); flagged catalogue items then appear here.", icon=":material/search_check:")
        else:
            st.success("Nothing left to review. New predictions and batches land here.")
        st.button("Undo last", key="review_undo", icon=":material/undo:", shortcut="Z", on_click=undo)
        st.stop()

    pid = item.product_id
    image_col, text_col = st.columns([1, 2])
    if item.image_path is not None:
        image_col.image(str(item.image_path), width="stretch")
    else:
        image_col.caption("No photo")
    checked_by = "out-of-fold label check" if order == SUSPECTS else f"model {item.model_version}"
    text_col.markdown(f"**Product {pid}** · {checked_by} · source `{item.source or '–'}`")
    text_col.text(item.text or "(no description)")  # as text: a product's description is not Markdown
    if item.skipped:
        text_col.info("You skipped this one before; it came back after the others.", icon=":material/redo:")
    if item.low_confidence and order != SUSPECTS:
        text_col.warning(f"Low confidence: the model gives its best guess only {percent(item.confidence)}.",
                         icon=":material/help:")
    if item.disagree:
        text_col.warning(f"The description says **{item.text_label}**, the photo looks like **{item.image_label}**.",
                         icon=":material/warning:")
    if order == SUSPECTS:
        text_col.warning(f"The catalogue says **{item.label}**; models that never saw this item suggest "
                         f"**{item.extra['suggested_label']}** (suspect score {item.extra['suspect_score']:.2f}).",
                         icon=":material/search_check:")
    for suggestion in item.suggestions:
        note = f" — “{suggestion['note']}”" if suggestion["note"] else ""
        text_col.info(f"Viewer **{suggestion['reviewer']}** suggests **{suggestion['new_label']}**{note}",
                      icon=":material/lightbulb:")

    st.markdown("**Suggestions**")
    top = item.top(3)
    for rank, (label, prob) in enumerate(top, 1):
        bar_col, pick_col = st.columns([5, 1], vertical_alignment="center")
        bar_col.progress(prob, text=f"{rank}. {label} — {percent(prob)}")
        pick_col.button(f"Pick {rank}", key=f"review_pick_{rank}", shortcut=str(rank),
                        help=f"Label product {pid} as {label}", on_click=decide,
                        args=(item, "accept") if label == item.label else (item, "correct", label))

    accept_col, oos_col, skip_col, undo_col = st.columns(4)
    keep = "Keep" if order == SUSPECTS else "Accept"
    accept_col.button(f"{keep} “{item.label}”", type="primary", key="review_accept", shortcut="A",
                      on_click=decide, args=(item, "accept"))
    oos_col.button("Out of scope", key="review_out_of_scope", shortcut="O", icon=":material/block:",
                   help="No category fits this product; it is never trained on, and admins see it",
                   on_click=decide, args=(item, "out_of_scope"))
    skip_col.button("Skip", key="review_skip", shortcut="S", icon=":material/skip_next:", on_click=decide,
                    args=(item, "skip"))
    undo_col.button("Undo last", key="review_undo", shortcut="Z", icon=":material/undo:", on_click=undo)
    if order == SUSPECTS and item.extra["suggested_label"] != item.label:
        suggested = item.extra["suggested_label"]
        st.button(f"Apply the suggested label “{suggested}”", key="review_apply_suggested", shortcut="G",
                  icon=":material/auto_fix_high:", on_click=decide, args=(item, "correct", suggested))

    with st.form(f"correct_{pid}", border=True), st.container(key="correct_picker"):
        ranked = [label for label, _ in top if label != item.label]
        others = ranked + [c for c in category_choices(item.labels) if c not in ranked and c != item.label]
        st.selectbox("Correct to", others, index=None, placeholder="Press / and type to search…",
                     key=f"review_label_{pid}")
        st.text_input("Note (optional)", key=f"review_note_{pid}")
        st.form_submit_button("Save correction", on_click=decide, args=(item, "correct"),
                              kwargs={"from_form": True})
    focus_key("/", ".st-key-correct_picker input")

    if st.toggle("Explain this prediction", key=f"review_explain_{pid}"):
        classifier, _ = live_classifier()
        if classifier is not None:
            cached = st.session_state.get("review_explanation")
            if cached is None or cached[0] != pid:
                from core.explain.service import explainer_for

                with st.spinner("Explaining…"):
                    explanation = explainer_for(classifier).explain(
                        text=item.text or None, image=item.image_path, class_label=item.label
                        if item.label in classifier.labels else None)
                st.session_state["review_explanation"] = (pid, explanation)
            explanation = st.session_state["review_explanation"][1]
            st.caption(explanation.modality.summary + (f" (explained with the live model "
                                                       f"{classifier.version})" if classifier.version !=
                                                       item.model_version else ""))
            show_explanation(explanation, f"review_{pid}")
