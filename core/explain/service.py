"""One call that explains a product: prediction + Grad-CAM + text SHAP + modality share.

    from core.explain.service import explain
    e = explain(classifier, text="Rockmantra ceramic mug", image="mug.jpg")
    e.label, e.gradcam.heatmap, e.text_shap.tokens, e.modality.summary
    e.write("out/")          # prediction.json, gradcam.npy/.png, text_shap.json, modality_share.json

The app calls this on every prediction, so the expensive set-up (Grad-CAM gradient
functions, compiled text-model call, SHAP masker and explainers) is built once per
loaded Classifier (`explainer_for`, a weak cache: it goes away with the Classifier).

The prediction is computed here from the same forward passes the explanations use (one
backbone pass serves both the image probabilities and Grad-CAM), and fused with the
bundle's own Fusion, so the numbers explained are the numbers shown;
`Classifier.predict` gives the same probabilities (tested). A caller that has just
predicted (the Predict page scores and records the product first) passes that prediction
(`prediction=`): it is explained as it is, and the model is not run again for it.

Bounded for everyone else: the text is cut to the app's one cap (`core.common.text`); the model
lock is held for the prediction and Grad-CAM (a few forward passes) and, during SHAP,
for one model batch at a time, so another user's prediction never waits for a whole
explanation; SHAP has a time budget (`time_budget`) after which it gives a coarse
explanation. What was bounded is said in `Explanation.notes`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.common.errors import InputError
from core.common.images import open_image
from core.common.text import MAX_TEXT_CHARS, collapse_whitespace, cut_text
from core.explain.gradcam import DEFAULT_METHOD, METHODS, GradCam, GradCamResult, overlay
from core.explain.modality import ModalityShare, modality_share
from core.explain.text_shap import MAX_EVALS, OWN_BUDGET, TIME_BUDGET_S, TextShap, TextShapResult
from core.models.classifier import Classifier, Prediction

FILES = ("prediction.json", "gradcam.npy", "gradcam.png", "text_shap.json", "modality_share.json")


@dataclass
class Explanation:
    prediction: Prediction
    label: str  # the explained class
    class_index: int
    modality: ModalityShare
    gradcam: GradCamResult | None = None  # None without an image (or an image model)
    text_shap: TextShapResult | None = None  # None without a text (or a text model)
    image: Image.Image | None = field(default=None, repr=False)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step, and "total"
    notes: list[str] = field(default_factory=list)  # what was bounded (text cut, words capped, time ran out)

    def as_dict(self) -> dict:
        """JSON-ready summary (the heatmap itself is left to gradcam.npy)."""
        out: dict[str, Any] = {"explained_label": self.label, "prediction": self.prediction.as_dict(),
                               "modality_share": self.modality.as_dict(), "timings": self.timings,
                               "notes": self.notes}
        if self.gradcam is not None:
            g = self.gradcam
            out["gradcam"] = {"method": g.method, "score": g.score, "image_probability": g.probability,
                              "shape": list(g.heatmap.shape), "peak_xy": list(g.peak())}
        if self.text_shap is not None:
            out["text_shap"] = self.text_shap.as_dict()
        return out

    def gradcam_png(self) -> bytes | None:
        """The photo with the heatmap on top, as PNG bytes (what gradcam.png holds)."""
        if self.gradcam is None or self.image is None:
            return None
        buffer = io.BytesIO()
        overlay(self.image, self.gradcam.heatmap.astype(np.float32)).save(buffer, format="PNG")
        return buffer.getvalue()

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write the CLI's files (each atomically); returns the paths written. Files that do
        not apply (no image → no gradcam.*, no text → no text_shap.json) are removed if an
        earlier run left them, so a folder never mixes two products."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def put(name: str, writer) -> None:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out)
            os.close(fd)
            try:
                writer(tmp)
                os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary outputs
                os.replace(tmp, out / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            written.append(out / name)

        def put_json(name: str, data: Any) -> None:
            put(name, lambda p: Path(p).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                                   encoding="utf-8"))

        prediction = self.prediction.as_dict()
        prediction["explained_label"] = self.label
        put_json("prediction.json", prediction)
        if self.gradcam is not None:
            heat = self.gradcam.heatmap.astype(np.float32)

            def save_npy(p: str) -> None:
                with open(p, "wb") as fh:
                    np.save(fh, heat)

            put("gradcam.npy", save_npy)
            png = self.gradcam_png()
            if png is not None:
                put("gradcam.png", lambda p: Path(p).write_bytes(png))
        if self.text_shap is not None:
            put_json("text_shap.json", self.text_shap.as_dict())
        put_json("modality_share.json", self.modality.as_dict())
        for name in FILES:
            if out / name not in written:
                (out / name).unlink(missing_ok=True)
        return written


class ProductExplainer:
    """The heavy set-up for explaining products of one loaded Classifier (traced Grad-CAM
    graphs, the compiled text-model call, SHAP maskers), built lazily once. It holds no
    per-explanation options: the method and the evaluation cap are arguments of every
    `explain` call, so a cached explainer can never answer with another call's options."""

    def __init__(self, classifier: Classifier, *, time_budget: float | None = TIME_BUDGET_S):
        self.classifier = classifier
        self.time_budget = time_budget  # default of explain(time_budget=...); explainer_for keeps TIME_BUDGET_S
        self._gradcam: GradCam | None = None
        self._text_shap: TextShap | None = None
        self._lock = getattr(classifier, "_lock", None) or threading.RLock()  # Keras is not thread-safe

    @property
    def gradcam(self) -> GradCam | None:
        if self._gradcam is None and self.classifier.image_model is not None:
            self._gradcam = GradCam.for_image_model(self.classifier.image_model)
        return self._gradcam

    @property
    def text_shap(self) -> TextShap | None:
        if self._text_shap is None and self.classifier.text_model is not None:
            self._text_shap = TextShap(self.classifier.text_model, self.classifier.labels,
                                       time_budget=self.time_budget, inference_lock=self._lock)
        return self._text_shap

    def class_index(self, label: str) -> int:
        labels = self.classifier.labels
        if label in labels:
            return labels.index(label)
        folded = [l for l in labels if l.casefold() == str(label).strip().casefold()]
        if len(folded) == 1:
            return labels.index(folded[0])
        shown = ", ".join(f"'{l}'" for l in labels[:30]) + (" …" if len(labels) > 30 else "")
        raise InputError(f"unknown class '{label}'; this model knows {shown}")

    def warm_up(self) -> "ProductExplainer":
        """Trace the compiled functions on dummy input, so the first real call is fast."""
        text = "warm up" if self.text_shap is not None else None
        image = Image.new("RGB", (64, 48), (255, 255, 255)) if self.gradcam is not None else None
        if text or image:
            self.explain(text=text, image=image)
        return self

    def explain(self, text: str | None = None, image: Any = None, class_label: str | None = None, *,
                method: str = DEFAULT_METHOD, max_evals: int = MAX_EVALS, gradcam: bool = True,
                text_shap: bool = True, time_budget: float | None = OWN_BUDGET,
                prediction: Prediction | None = None) -> Explanation:
        """Explain one product. `image`: path, bytes, file object or PIL image (bad image →
        InputError). `class_label`: the class to explain (default: the fused top class).
        `method`: the Grad-CAM method (`core.explain.gradcam.METHODS`); `max_evals`: cap on
        the text SHAP model evaluations. `time_budget`: seconds for the whole explanation
        (default the explainer's; None: unbounded); SHAP gets what the prediction and
        Grad-CAM left of it. Every option holds for this call only. `prediction`: this
        product's prediction by this classifier when the caller has it (it is the one
        explained and returned, and the probabilities are not computed again)."""
        if method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
        if int(max_evals) < 1:
            raise ValueError(f"max_evals must be 1 or more, got {max_evals}")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        notes: list[str] = []
        clf = self.classifier
        img = None
        if image is not None:
            img = image if isinstance(image, Image.Image) else open_image(image, what="image")
        text, cut = cut_text(collapse_whitespace(text or ""), MAX_TEXT_CHARS)
        if cut:
            notes.append(f"the description is longer than {MAX_TEXT_CHARS:,} characters: "
                         "its first part is explained")
        has_text = bool(text) and clf.text_model is not None
        has_image = img is not None and clf.image_model is not None
        if not (has_text or has_image):
            raise InputError("nothing to explain: give a description or an image"
                             + ("" if clf.image_model is not None else " (this model has no image part)"))
        wanted = self.class_index(class_label) if class_label is not None else None
        given = prediction is not None
        if given:
            self._check_prediction(prediction, has_text, has_image)

        with self._lock:  # a few forward passes; SHAP below takes the lock per model batch
            t = time.perf_counter()
            if given:
                p_text, p_image = prediction.text, prediction.image
            else:
                p_text = self.text_shap.predict_proba([text])[0].astype(np.float32) if has_text else None
            t_image = time.perf_counter()
            # the image model's forward pass (none when the prediction is given)
            feats = self.gradcam.features(img, probs=p_image if given else None) if has_image else None
            t_image = time.perf_counter() - t_image
            if not given:
                n = len(clf.labels)
                p_image = feats.probs if feats is not None else None
                fused = clf.fusion.predict_proba(
                    p_text[None] if p_text is not None else np.zeros((1, n), np.float32),
                    p_image[None] if p_image is not None else np.zeros((1, n), np.float32),
                    np.array([has_text]), np.array([has_image]))[0]
                prediction = Prediction(list(clf.labels), fused, p_text, p_image, clf.version, clf.tree)
                timings["prediction"] = time.perf_counter() - t
            c = int(np.argmax(prediction.fused)) if wanted is None else wanted

            cam = None
            if feats is not None and gradcam:
                t = time.perf_counter()
                cam = self.gradcam.heatmap(feats, c, method=method)
                timings["gradcam"] = time.perf_counter() - t + t_image  # its forward pass included
        shap_result = None
        if has_text and text_shap:
            t = time.perf_counter()
            budget = self.time_budget if time_budget == OWN_BUDGET else time_budget
            left = None if budget is None else max(0.0, budget - (t - started))
            shap_result = self.text_shap.explain(text, c, max_evals=int(max_evals), time_budget=left)
            timings["text_shap"] = time.perf_counter() - t
            if shap_result.note:
                notes.append(shap_result.note)

        t = time.perf_counter()
        share = modality_share(list(clf.labels), clf.fusion, p_text, p_image, c)
        timings["modality"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        return Explanation(prediction, clf.labels[c], c, share, cam, shap_result, img, timings, notes)

    def _check_prediction(self, prediction: Prediction, has_text: bool, has_image: bool) -> None:
        """A given prediction must be this classifier's, of this product's parts: explaining
        another model's numbers, or a photo the prediction never saw, would be wrong silently."""
        clf = self.classifier
        if list(prediction.labels) != list(clf.labels) or prediction.model_version != clf.version:
            raise ValueError(f"the prediction is of model {prediction.model_version!r}, "
                             f"not of the one explaining ({clf.version!r})")
        if (prediction.text is not None) != has_text or (prediction.image is not None) != has_image:
            raise ValueError("the prediction is not of this product: it was made "
                             f"{'with' if prediction.text is not None else 'without'} a description and "
                             f"{'with' if prediction.image is not None else 'without'} a photo")


_EXPLAINERS: "weakref.WeakKeyDictionary[Classifier, ProductExplainer]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def explainer_for(classifier: Classifier) -> ProductExplainer:
    """The cached ProductExplainer of this Classifier (created on first use). It takes no
    options: pass them to each `explain` call (an option given here once was silently
    ignored by every later call)."""
    with _CACHE_LOCK:
        explainer = _EXPLAINERS.get(classifier)
        if explainer is None:
            explainer = _EXPLAINERS[classifier] = ProductExplainer(classifier)
        return explainer


def explain(classifier: Classifier, text: str | None = None, image: Any = None, class_label: str | None = None,
            **options: Any) -> Explanation:
    """Explain one product with the classifier's cached explainer; `options` are
    ProductExplainer.explain's (method, max_evals, time_budget, …), for this call only."""
    return explainer_for(classifier).explain(text=text, image=image, class_label=class_label, **options)
