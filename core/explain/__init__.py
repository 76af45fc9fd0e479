"""Explanations that are faithful to the model, not decoration.

- `gradcam`: Grad-CAM / Grad-CAM++ heatmaps for the image model, mapped back onto the
  original photo (not only the 224×224 model input);
- `text_shap`: word-level SHAP values for the text model, additive by construction and
  checked (base value + values == the model's output);
- `modality`: how much of the fused decision came from the description and how much
  from the photo (an exact split of the fusion's logit margin);
- `service`: one call that does all three for a product, caching the heavy set-up per
  loaded Classifier (`explain(classifier, text=…, image=…)`);
- `cli`: the `python -m core explain` command.

Nothing here imports TensorFlow at package import time, so `python -m core --help`
stays fast; the submodules that need it import it themselves.
"""

from __future__ import annotations

from typing import Any

__all__ = ["explain", "explainer_for"]


def explain(classifier: Any, text: str | None = None, image: Any = None, class_label: str | None = None,
            **kwargs: Any):
    """Shortcut for `core.explain.service.explain` (imported lazily: it needs TensorFlow)."""
    from core.explain.service import explain as _explain

    return _explain(classifier, text=text, image=image, class_label=class_label, **kwargs)


def explainer_for(classifier: Any):
    """Shortcut for `core.explain.service.explainer_for`."""
    from core.explain.service import explainer_for as _explainer_for

    return _explainer_for(classifier)
