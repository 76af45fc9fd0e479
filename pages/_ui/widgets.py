"""What pages draw the same way: bad input as a message (never a traceback), explanations,
percentages, keyboard focus."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from core.common.errors import InputError, one_line
from core.studio.auth import PermissionDenied


@contextmanager
def friendly_errors(what: str = "") -> Iterator[None]:
    """Show bad input and refused actions as a message on the page; anything else as a
    short error line (the server log keeps the traceback)."""
    try:
        yield
    except InputError as exc:
        st.error(f"{what}{one_line(exc)}")
    except PermissionDenied as exc:
        st.error(f"Not allowed: {one_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - never a traceback in the UI
        import logging

        logging.getLogger("catalog_studio").exception("unexpected error")
        st.error(f"{what}something went wrong ({type(exc).__name__}: {one_line(exc)[:300]}). "
                 "Nothing was saved; the details are in the server log.")


def show_explanation(explanation, key: str, *, opacity_slider: bool = False) -> None:
    """Grad-CAM over the photo beside the description coloured by SHAP (Predict, Review)."""
    from pages._ui import charts

    label = explanation.label
    photo_col, words_col = st.columns(2)
    if explanation.gradcam is not None:
        opacity = (photo_col.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="gradcam_opacity")
                   if opacity_slider else 0.45)
        photo_col.plotly_chart(charts.gradcam_figure(explanation.image, explanation.gradcam.heatmap, opacity,
                                                     title=f"Where the photo says “{label}”"),
                               key=f"{key}_gradcam")
    else:
        photo_col.caption("No photo: the description decided alone.")
    if explanation.text_shap is not None:
        words_col.markdown(f"**Words for and against “{label}”** (red pushes towards it, blue away)")
        words_col.html(charts.text_shap_html(explanation.text_shap))
    else:
        words_col.caption("No description: the photo decided alone.")
    for note in explanation.notes:  # what was bounded: "the first 300 words", a time limit
        words_col.caption(note)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def focus_key(key: str, selector: str) -> None:
    """Pressing `key` (outside a text field) focuses the first element matching `selector`:
    Streamlit's button shortcuts cannot focus a widget, and "/" is a key it does not take.
    The script is ours and constant (no user input goes into it)."""
    import json

    st.html(f"""<script>
(() => {{
  const doc = window.parent ? window.parent.document : document;
  const id = {json.dumps(f"studio-focus-{key}")};
  if (doc[id]) {{ doc[id].selector = {json.dumps(selector)}; return; }}
  const state = {{selector: {json.dumps(selector)}}};
  doc[id] = state;
  doc.addEventListener("keydown", (event) => {{
    const target = event.target;
    const typing = target && (["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName) || target.isContentEditable);
    if (typing || event.ctrlKey || event.metaKey || event.altKey || event.key !== {json.dumps(key)}) return;
    // while the page redraws, the last item's elements linger (marked stale): focus the live one
    const element = [...doc.querySelectorAll(state.selector)].find(e => !e.closest('[data-stale="true"]'));
    if (element) {{ event.preventDefault(); element.focus(); element.click(); }}
  }});
}})();
</script>""", unsafe_allow_javascript=True, width="content")


def honest_percent(value: float) -> str:
    """A headline confidence: never "100%" (see pages._ui.charts.probability_label)."""
    from pages._ui.charts import probability_label

    return probability_label(value)
