"""Predict: one product in, fused / text / image probabilities out, with the reasons
(Grad-CAM over the photo, SHAP over the words, which model decided), then "correct?"."""

from __future__ import annotations

import streamlit as st

from core.common.category_path import category_choices
from core.studio.review_queue import LOW_CONFIDENCE, record_feedback
from core.studio.scoring import score_product
from pages._ui import charts
from pages._ui.model import live_classifier
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors, honest_percent, percent, show_explanation

user = require_page("predict")
st.title("Predict a category")
classifier, model = live_classifier()
if classifier is None:
    st.stop()

with st.form("predict", clear_on_submit=False):
    left, right = st.columns([1, 2])
    photo = left.file_uploader("Product photo", type=["jpg", "jpeg", "png", "webp"], key="predict_photo",
                               help="JPEG, PNG or WebP, up to 40 megapixels.")
    text = right.text_area("Description", key="predict_text", height=150,
                           placeholder="Product name and description, as in the catalogue")
    submitted = st.form_submit_button("Classify", type="primary")

if submitted:
    st.session_state.pop("predict_result", None)
    with friendly_errors("Could not classify: "):
        result = score_product(store(), classifier, user, text=text, image=photo.getvalue() if photo else None)
        st.session_state["predict_result"] = result
        st.session_state.pop("predict_feedback", None)

result = st.session_state.get("predict_result")
if result is None or result.prediction.model_version != classifier.version:
    st.stop()
prediction = result.prediction

# -- the answer -------------------------------------------------------------------------
st.subheader(f"{prediction.label} · {honest_percent(prediction.confidence)}")
st.caption(f"Product #{result.product_id} · model {prediction.model_version} · {result.latency_ms:.0f} ms")
if prediction.confidence < LOW_CONFIDENCE:
    st.warning(f"Low confidence: **{prediction.label}** is only the model's best guess "
               f"({percent(prediction.confidence)}). Check this product before trusting the category.",
               icon=":material/help:")
if prediction.disagree:
    image_sure = max(prediction.image) if prediction.image is not None else None
    st.warning(f"The description says **{prediction.text_label}** but the photo looks like "
               f"**{prediction.image_label}** ({percent(image_sure)} sure). The combined confidence above does not "
               "settle that: check this product before trusting the category.", icon=":material/warning:")
if prediction.depth > 1:  # a category tree: the path level by level, and where the rest of the mass went
    levels = [(name, conf) for name, conf in prediction.levels() if name]
    for column, (k, (name, conf)) in zip(st.columns(prediction.depth), enumerate(levels, start=1)):
        column.markdown(f"Level {k} · **{honest_percent(conf)}** sure")
        column.markdown(f"#### {name}")
    bars_col, tree_col = st.columns(2)
    bars_col.plotly_chart(charts.probability_bars(prediction, k=5), key="predict_probabilities")
    tree_col.plotly_chart(charts.tree_sunburst(prediction), key="predict_tree")
else:
    st.plotly_chart(charts.probability_bars(prediction, k=5), key="predict_probabilities")

# -- why --------------------------------------------------------------------------------
st.subheader("Why")
labels = list(prediction.labels)
explained = st.selectbox("Explain the class", labels, index=labels.index(prediction.label), key="explain_class")
cache = st.session_state.setdefault("explanations", {})
key = (result.product_id, explained)
if key not in cache:
    from core.explain.service import explainer_for

    with st.spinner("Explaining…"), friendly_errors("Could not explain: "):
        image = result.image.image if result.image is not None else None
        cache.clear()  # one product's explanations at a time
        # the recorded prediction (the one shown above) is explained: the model is not run again for it
        cache[key] = explainer_for(classifier).explain(text=result.text or None, image=image, class_label=explained,
                                                       prediction=prediction)
explanation = cache.get(key)
if explanation is not None:
    share = explanation.modality
    st.caption(f"{share.summary} (product #{result.product_id}, explained in "
               f"{explanation.timings.get('total', 0):.1f} s)")
    st.plotly_chart(charts.modality_bar(share), key="predict_modality")
    show_explanation(explanation, "predict", opacity_slider=True)

# -- correct? ---------------------------------------------------------------------------
st.subheader("Is this right?")
if not user.can("review"):
    st.caption("Your answer goes to the reviewers as a suggestion; it becomes a training label once a reviewer "
               "agrees.")
done = st.session_state.get("predict_feedback")
if done:
    st.success(done)
else:
    accept_col, correct_col = st.columns([1, 2])
    if accept_col.button(f"Yes, it is {prediction.label}", key=f"feedback_accept_{result.product_id}",
                         type="primary"):
        with friendly_errors("Could not save: "):
            feedback = record_feedback(store(), user, result.product_id, prediction_id=result.prediction_id)
            st.session_state["predict_feedback"] = (f"Sent to the reviewers: {prediction.label} looks right to you."
                                                    if feedback.suggestion else f"Saved: {prediction.label} confirmed.")
            st.rerun()
    others = [label for label in category_choices(labels) if label != prediction.label]
    right = correct_col.selectbox("No, the right category is", others, index=None,
                                  key=f"feedback_label_{result.product_id}", placeholder="Search a category…")
    if correct_col.button("Save correction" if user.can("review") else "Suggest this category",
                          key=f"feedback_correct_{result.product_id}", disabled=right is None):
        with friendly_errors("Could not save: "):
            feedback = record_feedback(store(), user, result.product_id, correct_label=right,
                                       prediction_id=result.prediction_id)
            st.session_state["predict_feedback"] = (f"Sent to the reviewers: you suggest {right}."
                                                    if feedback.suggestion else f"Saved: corrected to {right}.")
            st.rerun()
