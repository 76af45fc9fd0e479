"""`python -m core explain`: explain one product's prediction into a folder of files.

    python -m core explain --model MODEL_DIR --text "…" [--image PATH] [--class LABEL] --out DIR

writes prediction.json, gradcam.npy + gradcam.png (with an image), text_shap.json (with a
text) and modality_share.json, and prints a JSON summary on stdout. Bad input raises
InputError, which core.cli.main turns into one line on stderr and exit status 2. This module
imports nothing heavy at import time (`python -m core --help` stays fast).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.common.errors import InputError

DEFAULT_MAX_EVALS = 300  # core.explain.text_shap.MAX_EVALS (not imported: it pulls in TensorFlow)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `explain` command to core.cli.main's subparsers."""
    p = subparsers.add_parser(
        "explain", help="explain one prediction: Grad-CAM, word SHAP values and each modality's share",
        description="Explain why a product gets its category. Writes prediction.json, gradcam.npy, "
                    "gradcam.png, text_shap.json and modality_share.json into --out.")
    p.add_argument("--model", required=True, type=Path, metavar="MODEL_DIR")
    p.add_argument("--text", default="", help="the product text (title and description)")
    p.add_argument("--image", type=Path, metavar="PATH", help="the product photo")
    p.add_argument("--class", dest="class_label", metavar="LABEL",
                   help="class to explain (default: the predicted, fused top class)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the files")
    p.add_argument("--method", choices=("guided-density", "guided-gradcam", "gradcam", "gradcam++"),
                   default="guided-density",  # core.explain.gradcam.METHODS (not imported: --help stays fast)
                   help="image heatmap: the pixel-refined Grad-CAM drawn as evidence density x pixel rank "
                        "(default: readable and faithful in the benchmark), the raw pixel-refined map, "
                        "plain Grad-CAM, or Grad-CAM++")
    p.add_argument("--max-evals", type=int, default=DEFAULT_MAX_EVALS,
                   help=f"cap on text SHAP model evaluations (default {DEFAULT_MAX_EVALS})")
    p.add_argument("--quiet", action="store_true")
    return p


def _check(args) -> None:
    """Cheap checks before loading TensorFlow and the model."""
    from core.models import bundle

    if not bundle.is_bundle(args.model):
        raise InputError(f"{args.model}: not a model bundle (no {bundle.METADATA} / {bundle.LABELS}); "
                         "train one with `python -m core train … --out DIR`")
    text = " ".join((args.text or "").split())
    if not text and args.image is None:
        raise InputError("nothing to explain: give --text and/or --image")
    if args.image is not None:
        if not args.image.exists():
            raise InputError(f"--image {args.image}: file not found")
        if args.image.is_dir():
            raise InputError(f"--image {args.image}: is a folder, not an image file")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out}: exists and is not a folder")
    if args.max_evals < 1:
        raise InputError(f"--max-evals must be 1 or more, got {args.max_evals}")


def run(args) -> int:
    """The `explain` command; returns the exit status (InputError for bad input)."""
    _check(args)
    from core.common.images import open_image
    from core.explain.service import explainer_for
    from core.models.classifier import Classifier

    image = open_image(args.image, what=f"--image {args.image}") if args.image is not None else None
    classifier = Classifier.load(args.model)
    label = getattr(args, "class_label", None)
    if label is not None and label not in classifier.labels:
        explainer_for(classifier).class_index(label)  # raises InputError naming the known classes
    if image is not None and classifier.image_model is None and not args.quiet:
        print("warning: this model has no image part; the image is ignored", file=sys.stderr)
    if args.text.strip() and classifier.text_model is None and not args.quiet:
        print("warning: this model has no text part; the text is ignored", file=sys.stderr)
    explanation = explainer_for(classifier).explain(text=args.text, image=image, class_label=label,
                                                    method=args.method, max_evals=args.max_evals)
    written = explanation.write(args.out)
    share = explanation.modality
    summary = {
        "model_version": classifier.version,
        "label": explanation.prediction.label, "confidence": explanation.prediction.confidence,
        "explained_label": explanation.label, "decided_by": share.decided_by, "summary": share.summary,
        "files": [str(p) for p in written],
        "seconds": {k: round(v, 3) for k, v in explanation.timings.items()},
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0
