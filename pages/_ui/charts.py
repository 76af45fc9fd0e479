"""Plotly figures for the app: pure functions from core objects (or monitor frames) to
`go.Figure`s, so pages only lay them out and tests can check what a chart says.

Every builder copes with empty input: it returns a figure that says "no data yet"
instead of raising, because an empty database or a product without a photo is normal.
The three probability sources keep one colour everywhere (`SOURCE_COLOURS`).
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from core.common.category_path import join_path, path_parts

if TYPE_CHECKING:  # type hints only: keep this module free of model imports
    from core.explain.modality import ModalityShare
    from core.models.classifier import Prediction

SOURCE_COLOURS = {"fused": "#4C4CB8", "text": "#E4572E", "image": "#17A589"}
SOURCE_NAMES = {"fused": "fused", "text": "description", "image": "photo"}
BIAS_COLOUR = "#9E9E9E"
COMPARE_COLOURS = ("#4C4CB8", "#F0A202")  # live vs candidate
POSITIVE_RGB, NEGATIVE_RGB = (220, 38, 38), (37, 99, 235)  # SHAP: pushes toward / away from the class
MAX_IMAGE_SIDE = 512  # photo in the Grad-CAM figure, long side
MAX_HEAT_SIDE = 128  # heatmap cells, long side: drawn smoothed over the photo, keeps the JSON small
NO_DATA = "no data yet"


def _layout(fig: go.Figure, title: str = "", height: int | None = None, **kwargs: Any) -> go.Figure:
    fig.update_layout(title=title or None, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      template="plotly_white", **kwargs)
    return fig


def empty_figure(title: str = "", message: str = NO_DATA, height: int = 250) -> go.Figure:
    """A blank figure with a centred message, for charts with nothing to show."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#888"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height)


def _is_empty(frame: pd.DataFrame | None, *columns: str) -> bool:
    return frame is None or len(frame) == 0 or any(c not in frame.columns for c in columns)


# --------------------------------------------------------------------------- prediction


def probability_label(value: float) -> str:
    """A probability as people read it: never "100%" or "0%" for what a model only believes
    strongly (a rounded 100% beside a photo that says otherwise reads as certainty)."""
    if value >= 0.995:
        return ">99%"
    if 0 < value < 0.005:
        return "<1%"
    return f"{value:.0%}"


def probability_bars(prediction: "Prediction | None", k: int = 5) -> go.Figure:
    """Top-k classes by fused probability, with the description's and the photo's own
    probabilities beside each, so a reviewer sees which model drove the decision."""
    if prediction is None or prediction.fused is None or not len(prediction.labels) or k < 1:
        return empty_figure()
    top = prediction.top(k, "fused")
    index = [prediction.labels.index(label) for label, _ in top]
    classes = [label for label, _ in top]
    fig = go.Figure()
    for source in ("fused", "text", "image"):
        probs = getattr(prediction, source)
        if probs is None:
            continue
        values = [float(probs[i]) for i in index]
        fig.add_bar(y=classes, x=values, orientation="h", name=SOURCE_NAMES[source],
                    marker_color=SOURCE_COLOURS[source], text=[probability_label(v) for v in values],
                    textposition="outside", cliponaxis=False,
                    hovertemplate="%{y}: %{x:.4f}<extra>" + SOURCE_NAMES[source] + "</extra>")
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed")  # highest first, at the top
    _layout(fig, height=80 + 60 * len(classes), barmode="group", bargap=0.25,
            legend=dict(orientation="h", y=-0.15), legend_traceorder="normal")
    return fig.update_layout(margin_r=50)  # room for a ">99%" label outside its bar


def px_colours() -> list[str]:
    """One colour per top-level category (its subtree in lighter shades of it)."""
    import plotly.express as px

    return px.colors.qualitative.Set2


def tree_sunburst(prediction: "Prediction | None", min_share: float = 0.005) -> go.Figure:
    """Where the probability mass sits in the category tree: a ring per level, each node
    as wide as the chance that the product belongs under it. Paths under `min_share`
    are left out (their mass still counts in their parents' share of the circle)."""
    if prediction is None or prediction.fused is None:
        return empty_figure("Probability over the category tree")
    mass: dict[tuple[str, ...], float] = {}
    for label, p in zip(prediction.labels, np.asarray(prediction.fused, float)):
        parts = tuple(path_parts(label))
        for k in range(1, len(parts) + 1):
            mass[parts[:k]] = mass.get(parts[:k], 0.0) + float(p)
    nodes = sorted((n for n, v in mass.items() if v >= min_share), key=len)
    fig = go.Figure(go.Sunburst(
        ids=[join_path(n) for n in nodes], labels=[n[-1] for n in nodes],
        parents=[join_path(n[:-1]) for n in nodes], values=[mass[n] for n in nodes], branchvalues="remainder",
        hovertemplate="%{id}<br>%{value:.1%}<extra></extra>", insidetextorientation="radial"))
    fig.update_layout(sunburstcolorway=px_colours(), extendsunburstcolors=True)
    return _layout(fig, "Probability over the category tree", height=380)


def _fit(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    if scale >= 1:
        return image
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BILINEAR)


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gradcam_figure(image: Image.Image | None, heatmap: np.ndarray | None, opacity: float = 0.45,
                   title: str = "") -> go.Figure:
    """The photo with the Grad-CAM heatmap over it. The photo travels as a ≤512 px JPEG and
    the heatmap as a ≤128-cell grid drawn smoothed across it: a small figure, same picture."""
    if image is None or min(image.size) < 1:
        return empty_figure(title)
    photo = _fit(image.convert("RGB"), MAX_IMAGE_SIDE)
    w, h = photo.size
    fig = go.Figure(go.Image(source=_data_uri(photo), x0=0, y0=0, dx=1, dy=1, hoverinfo="skip"))
    if heatmap is not None and np.size(heatmap):
        heat = np.nan_to_num(np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1))
        cells = _fit(Image.fromarray(np.ascontiguousarray(heat)), MAX_HEAT_SIDE)
        cw, ch = cells.size
        z = np.round(np.asarray(cells, dtype=np.float32), 3)
        dx, dy = w / cw, h / ch  # cell (i, j) is centred on its share of the photo
        fig.add_heatmap(z=z, x0=dx / 2 - 0.5, dx=dx, y0=dy / 2 - 0.5, dy=dy, zmin=0, zmax=1,
                        colorscale="Turbo", opacity=opacity, zsmooth="best", showscale=True,
                        colorbar=dict(thickness=10, len=0.8, title=dict(text="heat")),
                        hovertemplate="heat %{z:.2f}<extra></extra>")
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor="x", constrain="domain")  # upright
    return _layout(fig, title, height=None)


def shap_text_html(tokens: Sequence[str], values: Sequence[float]) -> str:
    """The description with each word shaded by its SHAP value: red pushes toward the
    class, blue away, stronger colour for a larger share of the largest |value|.
    Tokens are rendered as given (the explainer's segments keep their trailing
    separators), so the text reads exactly as it was scored."""
    if len(tokens) != len(values):
        raise ValueError(f"{len(tokens)} tokens but {len(values)} values")
    if not tokens:
        return f'<div class="shap-text"><em>{NO_DATA}</em></div>'
    peak = max((abs(float(v)) for v in values), default=0.0)
    parts = []
    for token, value in zip(tokens, values):
        value = float(value)
        body = token.rstrip()
        tail = token[len(body):]
        if body:
            r, g, b = POSITIVE_RGB if value >= 0 else NEGATIVE_RGB
            alpha = 0.85 * abs(value) / peak if peak > 0 else 0.0
            parts.append(f'<span title="{value:+.4f}" style="background-color: rgba({r},{g},{b},{alpha:.3f}); '
                         f'border-radius: 3px; padding: 1px 2px">{html.escape(body)}</span>')
        parts.append(html.escape(tail))
    return '<div class="shap-text" style="line-height: 2; white-space: pre-wrap">' + "".join(parts) + "</div>"


def shap_segments(result: Any) -> list[str]:
    """A TextShapResult's tokens with their separators, for `shap_text_html`: its own
    `segments` when present, else cut from `text` at the tokens' start offsets."""
    tokens = list(getattr(result, "tokens", []) or [])
    segments = list(getattr(result, "segments", []) or [])
    if len(segments) == len(tokens):
        return segments
    text, starts = result.text, [t.start for t in tokens]
    out = [text[s:e] for s, e in zip(starts, starts[1:] + [len(text)])]
    if out:
        out[0] = text[:starts[0]] + out[0]
    return out


def modality_bar(share: "ModalityShare | None") -> go.Figure:
    """What the description, the photo and the class priors each added to the winning
    margin (signed: a negative part argued against the class), labelled with the shares."""
    if share is None:
        return empty_figure()
    rows = [(f"description {share.text_share:.0%}", share.text, SOURCE_COLOURS["text"]),
            (f"photo {share.image_share:.0%}", share.image, SOURCE_COLOURS["image"]),
            ("prior (bias)", share.bias, BIAS_COLOUR)]
    fig = go.Figure(go.Bar(y=[r[0] for r in rows], x=[r[1] for r in rows], orientation="h",
                           marker_color=[r[2] for r in rows], text=[f"{r[1]:+.2f}" for r in rows],
                           textposition="auto", hovertemplate="%{y}: %{x:+.4f}<extra></extra>"))
    fig.add_vline(x=0, line_width=1, line_color="#555")
    fig.update_yaxes(autorange="reversed")
    versus = f" over '{share.versus}'" if share.versus else ""
    fig.update_xaxes(title_text=f"logit margin for '{share.label}'{versus}: {share.margin:+.2f}")
    return _layout(fig, height=200, showlegend=False)


# --------------------------------------------------------------------------- evaluation


def confusion_heatmap(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str = "",
                      x_title: str = "predicted", y_title: str = "true") -> go.Figure:
    """Counts per (true, predicted) pair, written in each cell; the first label on top."""
    z = np.asarray(matrix, dtype=float) if len(matrix) else np.zeros((0, 0))
    labels = list(labels)
    if not labels or z.shape != (len(labels), len(labels)) or z.sum() == 0:
        return empty_figure(title)
    counts = z.astype(int)
    fig = go.Figure(go.Heatmap(z=counts, x=labels, y=labels, text=counts, texttemplate="%{text}",
                               colorscale="Blues", showscale=False,
                               hovertemplate=f"{y_title} %{{y}}<br>{x_title} %{{x}}<br>%{{z}}<extra></extra>"))
    fig.update_xaxes(title_text=x_title, side="bottom", type="category")
    fig.update_yaxes(title_text=y_title, autorange="reversed", type="category")
    return _layout(fig, title, height=max(300, 120 + 28 * len(labels)))


def per_class_f1_bars(per_class_f1: dict[str, float] | None, other: dict[str, float] | None = None,
                      names: tuple[str, str] = ("live", "candidate"), title: str = "") -> go.Figure:
    """F1 per class, optionally beside a second model's, to see where a candidate wins or loses."""
    per_class_f1, other = per_class_f1 or {}, other or {}
    classes = list(per_class_f1) + [c for c in other if c not in per_class_f1]
    if not classes:
        return empty_figure(title)
    fig = go.Figure()
    for scores, name, colour in ((per_class_f1, names[0], COMPARE_COLOURS[0]), (other, names[1], COMPARE_COLOURS[1])):
        if scores:
            values = [scores.get(c) for c in classes]
            fig.add_bar(x=classes, y=values, name=name, marker_color=colour,
                        hovertemplate="%{x}: %{y:.3f}<extra>" + name + "</extra>")
    fig.update_yaxes(range=[0, 1], title_text="F1")
    return _layout(fig, title, height=320, barmode="group", legend=dict(orientation="h", y=1.1))


# --------------------------------------------------------------------------- monitor


def daily_counts(frame: pd.DataFrame | None, title: str = "") -> go.Figure:
    """Predictions per day and how many of those products a reviewer has settled
    (`monitor.predictions_per_day`)."""
    if _is_empty(frame, "day", "predictions"):
        return empty_figure(title)
    fig = go.Figure()
    fig.add_bar(x=frame["day"], y=frame["predictions"], name="predictions", marker_color=SOURCE_COLOURS["fused"])
    if "reviewed" in frame.columns:
        fig.add_bar(x=frame["day"], y=frame["reviewed"], name="reviewed", marker_color=COMPARE_COLOURS[1])
    fig.update_xaxes(type="date", tickformat="%b %d")
    fig.update_yaxes(title_text="count", rangemode="tozero")
    return _layout(fig, title, height=300, barmode="group", legend=dict(orientation="h", y=1.1))


def disagreement_rate_line(frame: pd.DataFrame | None, title: str = "") -> go.Figure:
    """Share of predictions per day where the description and photo models disagree
    (`monitor.disagreement_rate`): a rise hints at drift in one input."""
    if _is_empty(frame, "day", "rate") or frame["rate"].isna().all():
        return empty_figure(title)
    fig = go.Figure(go.Scatter(x=frame["day"], y=frame["rate"], mode="lines+markers", name="disagreement",
                               line_color=SOURCE_COLOURS["text"], hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
    fig.update_xaxes(type="date", tickformat="%b %d")
    fig.update_yaxes(range=[0, 1], tickformat=".0%", title_text="disagreement")
    return _layout(fig, title, height=300)


def confidence_histogram(values: pd.DataFrame | Sequence[float] | None, title: str = "") -> go.Figure:
    """Distribution of the fused confidence (`monitor.confidence_values`, or plain
    numbers); one overlaid histogram per model version when there are several."""
    if isinstance(values, pd.DataFrame):
        frame = values
    else:
        frame = pd.DataFrame({"confidence": list(values) if values is not None else []})
    if _is_empty(frame, "confidence") or frame["confidence"].dropna().empty:
        return empty_figure(title)
    frame = frame.dropna(subset=["confidence"])
    groups = list(frame.groupby("model_version", sort=True)) if "model_version" in frame.columns else []
    if len(groups) <= 1:
        groups = [("all", frame)]
    fig = go.Figure()
    for i, (version, part) in enumerate(groups):
        fig.add_histogram(x=part["confidence"], name=str(version) or "?", xbins=dict(start=0, end=1.0001, size=0.05),
                          opacity=0.75 if len(groups) > 1 else 1.0,
                          marker_color=SOURCE_COLOURS["fused"] if i == 0 else None,
                          hovertemplate="%{x}: %{y}<extra>%{fullData.name}</extra>")
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="confidence")
    fig.update_yaxes(title_text="predictions")
    return _layout(fig, title, height=300, barmode="overlay", showlegend=len(groups) > 1)


def correction_rate_bars(frame: pd.DataFrame | None, title: str = "") -> go.Figure:
    """Share of reviewed predictions of each class that a reviewer corrected
    (`monitor.correction_rate_per_class`), worst class on top."""
    if _is_empty(frame, "label", "rate"):
        return empty_figure(title)
    frame = frame.sort_values(["rate", "label"], ascending=[False, True])
    counts = [f"{c}/{r}" for c, r in zip(frame["corrected"], frame["reviewed"])]
    fig = go.Figure(go.Bar(y=frame["label"], x=frame["rate"], orientation="h", text=counts, textposition="auto",
                           marker_color=SOURCE_COLOURS["text"],
                           hovertemplate="%{y}: %{x:.1%} corrected (%{text})<extra></extra>"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="corrected")
    fig.update_yaxes(autorange="reversed", type="category")
    return _layout(fig, title, height=max(250, 80 + 28 * len(frame)))


def class_distribution(frame: pd.DataFrame | None, title: str = "") -> go.Figure:
    """Share of each class among recent predictions beside its share of the training
    data (`monitor.class_distribution`): a large gap means the traffic has shifted."""
    if _is_empty(frame, "label", "predicted_share", "training_share"):
        return empty_figure(title)
    fig = go.Figure()
    fig.add_bar(x=frame["label"], y=frame["predicted_share"], name="predicted", marker_color=SOURCE_COLOURS["fused"],
                hovertemplate="%{x}: %{y:.1%}<extra>predicted</extra>")
    fig.add_bar(x=frame["label"], y=frame["training_share"], name="training", marker_color=BIAS_COLOUR,
                hovertemplate="%{x}: %{y:.1%}<extra>training</extra>")
    fig.update_xaxes(type="category")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", title_text="share")
    return _layout(fig, title, height=320, barmode="group", legend=dict(orientation="h", y=1.1))


def text_shap_html(result: Any) -> str:
    """A TextShapResult as coloured HTML (the pages' one call)."""
    return shap_text_html(shap_segments(result), [t.value for t in result.tokens])


def training_curves(history: dict[str, dict[str, list[float]]] | None, title: str = "") -> go.Figure:
    """Loss and accuracy per epoch of each model's final fit (from the bundle's metadata
    `history`: {"text": {"loss": [...], "accuracy": [...]}, "image": {...}})."""
    from plotly.subplots import make_subplots

    series = [(model, metric, values) for model, curves in (history or {}).items()
              for metric, values in (curves or {}).items() if metric in ("loss", "accuracy") and values]
    if not series:
        return empty_figure(title)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    for model, metric, values in series:
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, mode="lines+markers",
                                 name=f"{model} {metric}", legendgroup=model,
                                 line_color=SOURCE_COLOURS.get(model, "#555")),
                      row=1, col=1 if metric == "loss" else 2)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, title, height=300)
