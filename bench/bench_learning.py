"""The learning loop on the Flipkart sample, printed as JSON:

- label noise: flip 10% of the labels at random; how many of the flipped rows are in
  the top-k of `suspects` (k = number flipped). Target ≥ 70%.
- active learning: label 20% of the training part, then add 10% more chosen by the review
  queue's ordering (least confident first, by the model trained on the 20%) or at random;
  macro-F1 on the held-out part after retraining, mean over 3 seeds. The queue's choice
  must not be worse.
- retraining from the store with cached embeddings (the app's "Train" button and
  `python -m core train --from-store`). Target ≤ 60 s on 2 cores.

    STUDIO_HOME=/tmp/benchhome .venv/bin/python bench/bench_learning.py [noise] [active] [retrain] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import emit  # noqa: E402 - bench/ is the script's folder

from core.models.tf_setup import seed_everything  # noqa: E402,F401  (before TensorFlow)


def flipkart():
    from core.studio.demo import load_demo_catalogue

    return load_demo_catalogue()


def bench_noise(catalogue, seed: int = 0) -> dict:
    from core.training.suspects import find_suspects

    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(catalogue.trainable_mask())
    flipped = rng.choice(rows, size=len(rows) // 10, replace=False)
    classes = catalogue.classes
    noisy = catalogue.subset(range(len(catalogue)))
    noisy.labels = list(catalogue.labels)
    for i in flipped:
        noisy.labels[i] = str(rng.choice([c for c in classes if c != catalogue.labels[i]]))
    started = time.time()
    result = find_suspects(noisy, seed=seed)
    order = result.rows[np.argsort(-result.score, kind="stable")]
    k = len(flipped)
    hits = len(set(order[:k].tolist()) & set(flipped.tolist()))
    flagged = set(result.rows[result.flagged].tolist())
    return {"rows": int(len(rows)), "flipped": int(k), "top_k_recall": round(hits / k, 4),
            "flagged": len(flagged), "flagged_precision": round(len(flagged & set(flipped.tolist())) / max(1, len(flagged)), 4),
            "flagged_recall": round(len(flagged & set(flipped.tolist())) / k, 4),
            "seconds": round(time.time() - started, 1), "target_top_k_recall": 0.7}


def _fit(catalogue, rows, seed):
    from core.training.trainer import TrainConfig, Trainer

    return Trainer(TrainConfig(seed=seed, val_fraction=0), verbose=False).fit(catalogue.subset(rows))


def _macro_f1(classifier, catalogue, rows) -> float:
    from core.training.metrics import classification_metrics

    sub = catalogue.subset(rows)
    result = classifier.predict_batch(sub.texts, sub.image_paths)
    predicted = [classifier.labels[int(np.argmax(p))] for p in result.fused]
    return classification_metrics(sub.labels, predicted, classifier.labels)["macro_f1"]


def bench_active(catalogue, seeds=(0, 1, 2)) -> dict:
    from core.data.splits import dedup_groups
    from core.training.trainer import split_train_val

    rows = np.flatnonzero(catalogue.trainable_mask())
    y = np.array([catalogue.classes.index(catalogue.labels[i]) for i in rows])
    runs = []
    for seed in seeds:
        train, test = split_train_val(y, dedup_groups([catalogue.texts[i] for i in rows]), 0.25, seed)
        train, test = rows[train], rows[test]
        rng = np.random.default_rng(seed)
        pool = rng.permutation(train)
        start, extra = int(0.2 * len(train)), int(0.1 * len(train))
        labelled, unlabelled = pool[:start], pool[start:]
        base = _fit(catalogue, labelled, seed)
        sub = catalogue.subset(unlabelled)
        probs = base.predict_batch(sub.texts, sub.image_paths).fused
        queue = unlabelled[np.argsort(probs.max(1), kind="stable")[:extra]]  # least confidence first
        random = rng.choice(unlabelled, size=extra, replace=False)
        run = {"seed": seed, "labelled_start": int(start), "added": int(extra), "test_rows": int(len(test)),
               "start_macro_f1": _macro_f1(base, catalogue, test)}
        for name, chosen in (("queue", queue), ("random", random)):
            run[f"{name}_macro_f1"] = _macro_f1(_fit(catalogue, np.concatenate([labelled, chosen]), seed), catalogue, test)
        runs.append(run)
        print(json.dumps(run), file=sys.stderr)
    mean = lambda key: round(float(np.mean([r[key] for r in runs])), 4)  # noqa: E731
    std = lambda key: round(float(np.std([r[key] for r in runs])), 4)  # noqa: E731
    return {"runs": runs, "start_macro_f1": {"mean": mean("start_macro_f1"), "std": std("start_macro_f1")},
            "queue_macro_f1": {"mean": mean("queue_macro_f1"), "std": std("queue_macro_f1")},
            "random_macro_f1": {"mean": mean("random_macro_f1"), "std": std("random_macro_f1")},
            "queue_not_worse": mean("queue_macro_f1") >= mean("random_macro_f1")}


def bench_retrain(catalogue) -> dict:
    """Import into a fresh database, train once (fills the embedding cache if needed),
    then time the retraining the app does."""
    from core.studio.auth import User
    from core.studio.jobs import get_job
    from core.studio.labels import import_catalogue
    from core.studio.retrain import start_training
    from core.studio.store import Store

    store = Store(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_learning_{os.getpid()}.db")
    admin = User.system("bench")
    import_catalogue(store, admin, catalogue, "flipkart")
    timings = []
    for _ in range(2):
        started = time.time()
        job = get_job(store, start_training(store, admin, background=False))
        timings.append(round(time.time() - started, 1))
    result = job.result
    store.path.unlink(missing_ok=True)
    return {"first_seconds": timings[0], "cached_seconds": timings[1], "target_seconds": 60,
            "rows": result["trained_from"]["rows"],
            "eval_slice_fused_macro_f1": result["metrics"]["eval_slice"]["fused"]["macro_f1"],
            "validation_fused_macro_f1": result["metrics"]["validation"]["fused"]["macro_f1"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["noise", "active", "retrain"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    catalogue = flipkart()
    out = {"cpu_count": os.cpu_count(), "rows": len(catalogue)}
    for part in args.parts:
        started = time.time()
        out[part] = {"noise": bench_noise, "active": bench_active, "retrain": bench_retrain}[part](catalogue)
        out[part]["bench_seconds"] = round(time.time() - started, 1)
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
