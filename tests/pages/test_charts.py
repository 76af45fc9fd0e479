"""pages._ui.charts: what each figure says (order, colours, ranges), small JSON for Grad-CAM,
SHAP HTML colour signs and escaping, and "no data yet" instead of errors on empty input.
No model involved: Predictions and shares are built from plain arrays."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

from core.explain.modality import ModalityShare, modality_share
from core.models.classifier import Prediction
from pages._ui import charts

LABELS = ["Books", "Kitchen", "Toys", "Watches", "Garden", "Beauty"]


def says_no_data(fig: go.Figure) -> bool:
    return isinstance(fig, go.Figure) and len(fig.data) == 0 and any(
        a.text == charts.NO_DATA for a in fig.layout.annotations)


def prediction(text: bool = True, image: bool = True) -> Prediction:
    fused = np.array([0.05, 0.50, 0.10, 0.30, 0.03, 0.02])
    p_text = np.array([0.10, 0.60, 0.05, 0.20, 0.03, 0.02]) if text else None
    p_image = np.array([0.02, 0.20, 0.08, 0.65, 0.03, 0.02]) if image else None
    return Prediction(LABELS, fused, p_text, p_image, "v1")


def test_probability_bars_top_k_sorted_with_all_sources():
    fig = charts.probability_bars(prediction(), k=3)
    assert [t.name for t in fig.data] == ["fused", "description", "photo"]
    for trace in fig.data:
        assert trace.orientation == "h"
        assert list(trace.y) == ["Kitchen", "Watches", "Toys"]  # by fused probability, highest first
    assert list(fig.data[0].x) == pytest.approx([0.50, 0.30, 0.10])
    assert list(fig.data[1].x) == pytest.approx([0.60, 0.20, 0.05])  # text probs of the same classes
    assert list(fig.data[2].x) == pytest.approx([0.20, 0.65, 0.08])
    assert fig.layout.yaxis.autorange == "reversed"  # first category at the top
    assert tuple(fig.layout.xaxis.range) == (0, 1) and fig.layout.xaxis.tickformat == ".0%"
    assert fig.layout.barmode == "group"
    assert [t.marker.color for t in fig.data] == [charts.SOURCE_COLOURS[s] for s in ("fused", "text", "image")]
    assert "%{x:.4f}" in fig.data[0].hovertemplate


def test_probability_bars_skips_missing_source_and_copes_with_nothing():
    fig = charts.probability_bars(prediction(image=False), k=10)
    assert [t.name for t in fig.data] == ["fused", "description"]
    assert len(fig.data[0].y) == len(LABELS)
    assert says_no_data(charts.probability_bars(Prediction(LABELS, None, None, None)))
    assert says_no_data(charts.probability_bars(None))


def test_gradcam_figure_downscales_and_keeps_photo_upright():
    image = Image.new("RGB", (1600, 800), (200, 10, 10))
    heat = np.zeros((800, 1600), np.float32)
    heat[:400, :800] = 1.0  # top-left quarter is hot
    fig = charts.gradcam_figure(image, heat, opacity=0.3, title="why")
    photo, overlay = fig.data
    assert photo.type == "image" and photo.source.startswith("data:image/jpeg;base64,")
    assert overlay.type == "heatmap" and overlay.zmin == 0 and overlay.zmax == 1 and overlay.opacity == 0.3
    z = np.asarray(overlay.z)
    assert max(z.shape) <= charts.MAX_HEAT_SIDE and z.shape == (64, 128)
    assert z[0, 0] == pytest.approx(1.0) and z[-1, -1] == pytest.approx(0.0)  # top row is the top of the photo
    # the heatmap spans the downscaled 512×256 photo exactly
    assert overlay.x0 - overlay.dx / 2 == pytest.approx(-0.5)
    assert overlay.x0 + (z.shape[1] - 0.5) * overlay.dx == pytest.approx(512 - 0.5)
    assert overlay.y0 + (z.shape[0] - 0.5) * overlay.dy == pytest.approx(256 - 0.5)
    assert tuple(fig.layout.yaxis.range) == (255.5, -0.5)  # reversed: row 0 on top
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert len(fig.to_json()) < 200_000


def test_gradcam_figure_without_heatmap_or_image():
    small = Image.new("L", (40, 30))
    fig = charts.gradcam_figure(small, None)
    assert [t.type for t in fig.data] == ["image"]
    assert tuple(fig.layout.xaxis.range) == (-0.5, 39.5)  # small photos are not upscaled
    assert says_no_data(charts.gradcam_figure(None, None))


def test_shap_text_html_colours_sign_escapes_and_keeps_spacing():
    tokens = ["Steel ", "<mug> ", "& ", "lid."]
    values = [0.2, -0.1, 0.0, 0.4]
    out = charts.shap_text_html(tokens, values)
    spans = re.findall(r'<span title="([^"]+)" style="background-color: rgba\((\d+),(\d+),(\d+),([\d.]+)\)[^"]*">'
                       r"([^<]*)</span>", out)
    assert [s[5] for s in spans] == ["Steel", "&lt;mug&gt;", "&amp;", "lid."]
    assert [s[0] for s in spans] == ["+0.2000", "-0.1000", "+0.0000", "+0.4000"]
    red, blue = charts.POSITIVE_RGB, charts.NEGATIVE_RGB
    assert tuple(map(int, spans[0][1:4])) == red and tuple(map(int, spans[1][1:4])) == blue
    alphas = [float(s[4]) for s in spans]
    assert alphas[3] == pytest.approx(0.85) and alphas[0] == pytest.approx(0.425) and alphas[2] == 0
    assert alphas[1] == pytest.approx(0.2125, abs=1e-3)
    text = re.sub(r"<[^>]+>", "", out)
    assert text == "Steel &lt;mug&gt; &amp; lid."  # spacing as given, nothing added
    assert "<mug>" not in out


def test_shap_text_html_empty_and_mismatch():
    assert charts.NO_DATA in charts.shap_text_html([], [])
    assert "rgba(" in charts.shap_text_html(["a"], [0.0])  # all-zero values do not divide by zero
    with pytest.raises(ValueError):
        charts.shap_text_html(["a", "b"], [0.1])


def test_shap_segments_from_result_like_objects():
    class Tok:
        def __init__(self, token, start):
            self.token, self.start = token, start

    class Result:
        text = "Red mug, big"
        tokens = [Tok("Red", 0), Tok("mug", 4), Tok("big", 9)]
        segments: list[str] = []

    assert charts.shap_segments(Result()) == ["Red ", "mug, ", "big"]
    Result.segments = ["R ", "m ", "b"]
    assert charts.shap_segments(Result()) == ["R ", "m ", "b"]


def test_modality_bar_from_real_share():
    share = modality_share(["A", "B"], None, np.array([0.9, 0.1]), None)  # text only
    fig = charts.modality_bar(share)
    bar = fig.data[0]
    assert list(bar.y) == ["description 100%", "photo 0%", "prior (bias)"]
    assert list(bar.x) == pytest.approx([np.log(0.9 / 0.1), 0.0, 0.0], rel=1e-4)
    assert list(bar.marker.color) == [charts.SOURCE_COLOURS["text"], charts.SOURCE_COLOURS["image"], charts.BIAS_COLOUR]
    assert "'A' over 'B'" in fig.layout.xaxis.title.text
    assert says_no_data(charts.modality_bar(None))


def test_modality_bar_shows_a_modality_arguing_against():
    share = ModalityShare(label="Mug", class_index=0, versus="Vase", mode="fusion", margin=1.5, text=2.5,
                          image=-1.25, bias=0.25, text_share=2 / 3, image_share=1 / 3, decided_by="description",
                          text_label="Mug", image_label="Vase", text_probability=0.8, image_probability=0.3,
                          disagree=True, summary="")
    bar = charts.modality_bar(share).data[0]
    assert list(bar.y) == ["description 67%", "photo 33%", "prior (bias)"]
    assert list(bar.x) == [2.5, -1.25, 0.25] and list(bar.text) == ["+2.50", "-1.25", "+0.25"]


def test_confusion_heatmap_annotated_and_first_label_on_top():
    fig = charts.confusion_heatmap(["a", "b"], [[3, 1], [0, 5]], title="val")
    heat = fig.data[0]
    assert np.asarray(heat.z).tolist() == [[3, 1], [0, 5]] and np.asarray(heat.text).tolist() == [[3, 1], [0, 5]]
    assert heat.texttemplate == "%{text}" and list(heat.y) == ["a", "b"]
    assert fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.xaxis.title.text == "predicted" and fig.layout.yaxis.title.text == "true"
    for labels, matrix in (([], []), (["a", "b"], []), (["a"], [[0]])):
        assert says_no_data(charts.confusion_heatmap(labels, matrix))


def test_per_class_f1_bars_compares_models_over_union_of_classes():
    fig = charts.per_class_f1_bars({"a": 0.9, "b": 0.5}, {"b": 0.7, "c": 0.4})
    live, cand = fig.data
    assert (live.name, cand.name) == ("live", "candidate")
    assert list(live.x) == ["a", "b", "c"] and list(live.y) == [0.9, 0.5, None]
    assert list(cand.y) == [None, 0.7, 0.4]
    assert len(charts.per_class_f1_bars({"a": 1.0}).data) == 1
    assert says_no_data(charts.per_class_f1_bars({}))


def test_monitor_charts():
    days = pd.DataFrame({"day": ["2025-01-01", "2025-01-02"], "predictions": [4, 2], "reviewed": [1, 2]})
    fig = charts.daily_counts(days)
    assert [t.name for t in fig.data] == ["predictions", "reviewed"] and list(fig.data[0].y) == [4, 2]

    rates = pd.DataFrame({"label": ["a", "b", "c"], "reviewed": [4, 2, 1], "corrected": [1, 2, 0],
                          "rate": [0.25, 1.0, 0.0]})
    bars = charts.correction_rate_bars(rates).data[0]
    assert list(bars.y) == ["b", "a", "c"] and list(bars.x) == [1.0, 0.25, 0.0]  # worst first
    assert list(bars.text) == ["2/2", "1/4", "0/1"]

    conf = pd.DataFrame({"confidence": [0.2, 0.9, 0.95], "label": ["a", "b", "b"], "model_version": ["v1"] * 3})
    assert len(charts.confidence_histogram(conf).data) == 1
    conf["model_version"] = ["v1", "v2", "v2"]
    assert [t.name for t in charts.confidence_histogram(conf).data] == ["v1", "v2"]
    assert list(charts.confidence_histogram([0.5, 0.6]).data[0].x) == [0.5, 0.6]

    dist = pd.DataFrame({"label": ["a", "b"], "predicted": [3, 1], "predicted_share": [0.75, 0.25],
                         "training_share": [0.5, 0.5]})
    fig = charts.class_distribution(dist)
    assert [t.name for t in fig.data] == ["predicted", "training"] and list(fig.data[0].y) == [0.75, 0.25]

    dis = pd.DataFrame({"day": ["2025-01-01"], "rate": [0.5]})
    assert list(charts.disagreement_rate_line(dis).data[0].y) == [0.5]


@pytest.mark.parametrize("build", [
    lambda: charts.daily_counts(pd.DataFrame(columns=["day", "predictions", "reviewed"])),
    lambda: charts.daily_counts(None),
    lambda: charts.confidence_histogram(pd.DataFrame(columns=["confidence", "label", "model_version"])),
    lambda: charts.confidence_histogram([]),
    lambda: charts.correction_rate_bars(pd.DataFrame(columns=["label", "reviewed", "corrected", "rate"])),
    lambda: charts.class_distribution(pd.DataFrame(columns=["label", "predicted_share", "training_share"])),
    lambda: charts.disagreement_rate_line(pd.DataFrame({"day": ["2025-01-01"], "rate": [float("nan")]})),
])
def test_monitor_charts_empty(build):
    assert says_no_data(build())


def test_probabilities_never_read_as_certain():
    from helpers.studio import make_prediction

    from pages._ui.charts import probability_bars, probability_label

    assert [probability_label(v) for v in (0.9999, 0.995, 0.994, 0.5, 0.004, 0.0)] == [
        ">99%", ">99%", "99%", "50%", "<1%", "0%"]
    fig = probability_bars(make_prediction([0.9999, 0.00005, 0.00005], image=[0.001, 0.998, 0.001]))
    texts = [t for trace in fig.data for t in trace.text]
    assert "100%" not in texts and ">99%" in texts


def test_tree_sunburst_puts_each_nodes_mass_in_its_ring():
    from helpers.studio import make_prediction

    from pages._ui.charts import tree_sunburst

    prediction = make_prediction([0.2, 0.7, 0.1], labels=["Home >> Bath", "Home >> Bed", "Toys >> Puzzles"])
    trace = tree_sunburst(prediction).data[0]
    mass = dict(zip(trace.ids, trace.values))
    assert mass == pytest.approx({"Home": 0.9, "Toys": 0.1, "Home >> Bath": 0.2, "Home >> Bed": 0.7,
                                  "Toys >> Puzzles": 0.1})
    assert dict(zip(trace.ids, trace.parents))["Home >> Bed"] == "Home"
    assert "no data" in str(tree_sunburst(None).layout.annotations[0].text)
