"""How long another user's prediction waits while a long description is explained; prints JSON.

    .venv/bin/python bench/bench_contention.py [--model BUNDLE] [--words 20000] [--repo CHECKOUT] [--out FILE]

One thread explains a WORDS-word description (`core.explain.service` with its defaults:
the text cut to the one cap, SHAP over the first MAX_SHAP_WORDS words, the model lock per
SHAP batch, the time budget). As soon as its first SHAP model call starts, the main thread
asks for single predictions (`Classifier.predict`, a short description) one after another
until the explanation ends, and records how long each one took. Reported: the
explanation's duration and notes, each prediction's latency (max, median, count) and the
latency of the same prediction with nothing else running.

Issue 10 item 4: before, the explanation held the model lock from start to end, so the
first prediction waited for all of it (~275 s for 20k words, measured on the app); now it
waits for at most one SHAP batch.

Without --model a tiny bundle is trained first (tests/app_home.py, weights=None, ~1 min).
--repo runs the same measurement against another checkout's `core` (e.g. an export of the
commit before the fix: `git archive <commit> | tar -x -C /tmp/old`); use fewer --words
there, the old code explains every word.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _report import emit  # bench/ is the script's folder

HERE = Path(__file__).resolve().parents[1]
VOCABULARY = ("steel", "ceramic", "mug", "dial", "strap", "plush", "bear", "puzzle", "pan", "analog", "soft",
              "gift", "cotton", "handle", "kitchen", "watch", "toy", "blue", "set", "pack", "durable", "classic")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a bundle folder (default: train a tiny one)")
    parser.add_argument("--words", type=int, default=20_000)
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout whose `core` is measured")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    os.environ.setdefault("STUDIO_HOME", tempfile.mkdtemp(prefix="bench-contention-"))

    from core.explain.service import ProductExplainer
    from core.models.classifier import Classifier

    model = args.model
    train_seconds = None
    if model is None:
        sys.path.insert(0, str(HERE / "tests"))
        from helpers.app_home import train_tiny_bundle

        started = time.perf_counter()
        model = train_tiny_bundle(Path(tempfile.mkdtemp(prefix="bench-contention-model-")))
        train_seconds = round(time.perf_counter() - started, 1)
    classifier = Classifier.load(model)
    explainer = ProductExplainer(classifier)
    explainer.warm_up()
    short = "ceramic mug with a steel handle"
    classifier.predict(text=short)
    alone = []
    for _ in range(5):
        t = time.perf_counter()
        classifier.predict(text=short)
        alone.append(time.perf_counter() - t)

    text = " ".join(np.random.default_rng(0).choice(VOCABULARY, size=args.words))
    shap = explainer.text_shap
    real_call, in_shap = shap._call, threading.Event()

    def marked_call(batch):  # unchanged model call; only says SHAP has begun
        in_shap.set()
        return real_call(batch)

    shap._call = marked_call
    result: dict = {}

    def explain() -> None:
        t = time.perf_counter()
        try:
            e = explainer.explain(text=text, gradcam=False)
            result.update(notes=list(getattr(e, "notes", [])), tokens=len(e.text_shap.tokens),
                          coarse=bool(getattr(e.text_shap, "coarse", False)), evals=e.text_shap.evals)
        finally:
            result["seconds"] = time.perf_counter() - t

    thread = threading.Thread(target=explain, daemon=True)
    thread.start()
    in_shap.wait(600)
    waits = []
    while thread.is_alive():
        t = time.perf_counter()
        classifier.predict(text=short)
        waits.append(time.perf_counter() - t)
        time.sleep(0.05)
    thread.join()

    report = {
        "repo": str(args.repo), "model": str(model), "train_seconds": train_seconds, "words": args.words,
        "characters": len(text),
        "explanation": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()},
        "prediction_alone_ms": round(1000 * statistics.median(alone), 1),
        "prediction_during_explanation": {
            "count": len(waits), "max_s": round(max(waits), 3) if waits else None,
            "first_s": round(waits[0], 3) if waits else None,
            "median_ms": round(1000 * statistics.median(waits), 1) if waits else None,
        },
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
