"""Benchmark of the core engine on the shared data sets; prints one JSON document.

    python bench/run_bench.py                 # all: flipkart, myntra, pricerunner
    python bench/run_bench.py flipkart        # one or more by name

Texts repeat in these sets, so every split here is grouped by de-duplicated text:
no title is on both sides. Each text-only set is also scored with a scikit-learn
TF-IDF + LinearSVC reference trained on the same split in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))
SEED = 0


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("n", "accuracy", "macro_f1")}


def _fresh_home() -> Path:
    """A throw-away runtime home that keeps the converted backbone weights (a one-off
    conversion, not training) but no embedding cache: training 'from scratch'."""
    from core.common.settings import get_settings

    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    weights = get_settings().weights_dir
    if weights.exists():
        shutil.copytree(weights, home / "data" / "weights")
    return home


def _flipkart_catalogue():
    from core.studio.demo import load_demo_catalogue

    return load_demo_catalogue(DATA / "flipkart")


def bench_flipkart(folds: int = 5) -> dict:
    from core.data.splits import dedup_groups, grouped_folds
    from core.training.trainer import TrainConfig, Trainer, evaluation_metrics

    catalogue = _flipkart_catalogue()
    texts, labels, paths = catalogue.texts, catalogue.labels, catalogue.image_paths
    y = np.array(labels)
    out: dict = {"rows": len(texts), "classes": len(set(labels)), "protocol": f"{folds}-fold CV grouped by text"}

    # Training time: from scratch (empty embedding cache) and again with cached embeddings.
    home = _fresh_home()
    with mock.patch.dict(os.environ, {"STUDIO_HOME": str(home)}):  # the settings see an empty cache; restored after
        t = time.perf_counter()
        classifier = Trainer(verbose=False).fit(catalogue)
        out["train_seconds_from_scratch"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        classifier = Trainer(verbose=False).fit(catalogue)
        out["train_seconds_cached_embeddings"] = round(time.perf_counter() - t, 1)
        model_dir = home / "models" / "bench"
        classifier.save(model_dir)
        out["latency"] = bench_latency(model_dir, texts, paths)

    # Accuracy: pooled out-of-fold predictions of the full pipeline.
    n = len(texts)
    fused = np.zeros((n, out["classes"]), "float32")
    p_text, p_image = np.zeros_like(fused), np.zeros_like(fused)
    has_text, has_image = np.zeros(n, bool), np.zeros(n, bool)
    class_names = sorted(set(labels))
    for train, test in grouped_folds(y, dedup_groups(texts), folds, SEED):
        sub = catalogue.subset(train)
        clf = Trainer(TrainConfig(val_fraction=0.0, seed=SEED), verbose=False).fit(sub)
        assert clf.labels == class_names
        result = clf.predict_batch([texts[i] for i in test], [paths[i] for i in test])
        fused[test], p_text[test], p_image[test] = result.fused, result.text, result.image
        has_text[test], has_image[test] = result.has_text, result.has_image
    metrics = evaluation_metrics(class_names, list(labels), fused, p_text, has_text, p_image, has_image)
    out.update({k: _summary(metrics[k]) for k in ("fused", "text", "image")})
    out["fused_per_class_f1"] = metrics["fused"]["per_class_f1"]
    return out


def bench_latency(model_dir: Path, texts, paths, warmup: int = 5, runs: int = 40) -> dict:
    from core.models.classifier import Classifier
    from core.models.embeddings import EmbeddingCache

    t = time.perf_counter()
    classifier = Classifier.load(model_dir)
    load_s = time.perf_counter() - t
    items = [(t_, p) for t_, p in zip(texts, paths) if p is not None]
    for text, path in items[:warmup]:
        classifier.predict(text=text, image=path)
    times = []
    for text, path in items[warmup:warmup + runs]:
        t = time.perf_counter()
        classifier.predict(text=text, image=path)
        times.append(time.perf_counter() - t)
    batch = items[:200]
    cache = EmbeddingCache(Path(tempfile.mkdtemp(prefix="bench-cache-")) / "e.sqlite")  # cold: no cached embeddings
    t = time.perf_counter()
    classifier.predict_batch([b[0] for b in batch], [b[1] for b in batch], cache=cache)
    batch_s = time.perf_counter() - t
    return {"load_seconds": round(load_s, 2),
            "single_p50_ms": round(1000 * float(np.percentile(times, 50)), 1),
            "single_p95_ms": round(1000 * float(np.percentile(times, 95)), 1),
            "batch_products_per_second": round(len(batch) / batch_s, 1), "batch_size": len(batch)}


def _text_benchmark(csv: Path, text_col: str, label_col: str) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    from core.data.catalogue import load_catalogue
    from core.data.splits import dedup_groups
    from core.training.metrics import classification_metrics
    from core.training.trainer import TrainConfig, Trainer

    catalogue = load_catalogue(csv, text_cols=[text_col], label_col=label_col, require_labels=True)
    keep = np.flatnonzero(catalogue.trainable_mask())
    texts = [catalogue.texts[i] for i in keep]
    labels = [catalogue.labels[i] for i in keep]
    groups = dedup_groups(texts)
    train, test = next(GroupShuffleSplit(1, test_size=0.2, random_state=SEED).split(texts, labels, groups))
    out = {"rows": len(texts), "classes": len(set(labels)), "train_rows": len(train), "test_rows": len(test),
           "test_classes": len({labels[i] for i in test}),
           "protocol": "80/20 split grouped by de-duplicated text; test = every row of the held-out titles"}
    y_test = [labels[i] for i in test]

    sub = catalogue.subset(keep[train])
    t = time.perf_counter()
    clf = Trainer(TrainConfig(val_fraction=0.0, seed=SEED), verbose=False).fit(sub)
    out["train_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    result = clf.predict_batch([texts[i] for i in test])
    out["predict_rows_per_second"] = round(len(test) / (time.perf_counter() - t), 1)
    pred = [clf.labels[int(np.argmax(p))] for p in result.fused]
    out["model"] = _summary(classification_metrics(y_test, pred, clf.labels))

    t = time.perf_counter()
    reference = make_pipeline(
        make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                   TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
        LinearSVC(),
    ).fit([texts[i] for i in train], [labels[i] for i in train])
    ref_pred = list(reference.predict([texts[i] for i in test]))
    out["reference_tfidf_linearsvc"] = {**_summary(classification_metrics(y_test, ref_pred, sorted(set(labels)))),
                                        "train_seconds": round(time.perf_counter() - t, 1)}
    return out


def bench_myntra() -> dict:
    return _text_benchmark(DATA / "myntra" / "styles.csv", "productDisplayName", "articleType")


def bench_pricerunner() -> dict:
    return _text_benchmark(DATA / "pricerunner" / "pricerunner_aggregate.csv", "Product Title", "Category Label")


BENCHES = {"flipkart": bench_flipkart, "myntra": bench_myntra, "pricerunner": bench_pricerunner}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", choices=list(BENCHES), default=list(BENCHES))
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"no shared data at {DATA} (set STUDIO_SHARED_DATA)")
    report: dict = {"cpu_count": os.cpu_count(), "seed": SEED}
    for name in args.sets or BENCHES:
        t = time.perf_counter()
        report[name] = BENCHES[name]()
        report[name]["bench_seconds"] = round(time.perf_counter() - t, 1)
        print(f"{name} done in {report[name]['bench_seconds']} s", file=sys.stderr, flush=True)
    report["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
