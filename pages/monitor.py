"""Monitor: is the model still right? Volume, confidence, corrections, disagreement and
drift of the predicted classes away from what the model was trained on."""

from __future__ import annotations

import streamlit as st

from core.studio import monitor
from core.studio.registry import live_model
from pages._ui import charts
from pages._ui.session import require_page, store
from pages._ui.widgets import percent

require_page("monitor")
st.title("Monitor")

live = live_model(store())
depth = int(((live.metadata.tree if live is not None else None) or {}).get("depth") or 1)
window_col, level_col = st.columns([3, 2])
days = window_col.segmented_control("Window", [7, 30, 90, 365], default=30, format_func=lambda d: f"{d} days",
                                    key="monitor_days") or 30
level = None
if depth > 1:  # a category tree: corrections and drift per level (a fix within a department is no error at level 1)
    chosen = level_col.segmented_control("Category level", ["path", *range(1, depth + 1)], default="path",
                                         format_func=lambda v: "whole path" if v == "path" else f"level {v}",
                                         key="monitor_level") or "path"
    level = None if chosen == "path" else int(chosen)
totals = monitor.summary(store())
a, b, c, d, e = st.columns(5)
a.metric("Predictions", f"{totals['predictions']:,}")
b.metric("Reviewed", f"{totals['reviews']:,}")
c.metric("Waiting for review", f"{totals['pending']:,}")
d.metric("Correction rate", percent(totals["correction_rate"]))
e.metric("Text ≠ image", percent(totals["disagreement_rate"]))

left, right = st.columns(2)
left.plotly_chart(charts.daily_counts(monitor.predictions_per_day(store(), days), title="Predictions per day"),
                  key="monitor_daily")
right.plotly_chart(charts.confidence_histogram(monitor.confidence_values(store(), days), title="Confidence"),
                   key="monitor_confidence")

left, right = st.columns(2)
left.plotly_chart(charts.correction_rate_bars(monitor.correction_rate_per_class(store(), level),
                                              title="Correction rate per predicted class"), key="monitor_corrections")
labels, matrix = monitor.predicted_vs_corrected(store(), level)
right.plotly_chart(charts.confusion_heatmap(labels, matrix, title="Predicted vs reviewed label",
                                            y_title="reviewed"), key="monitor_confusion")

left, right = st.columns(2)
left.plotly_chart(charts.disagreement_rate_line(monitor.disagreement_rate(store(), days),
                                                title="Text–image disagreement rate"), key="monitor_disagreement")
training = live.metadata.per_class_train if live is not None else {}
right.plotly_chart(charts.class_distribution(monitor.class_distribution(store(), training, days, level),
                                             title="Predicted classes vs training data"), key="monitor_distribution")
