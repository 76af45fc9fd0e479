"""Train a bundle from a catalogue: text model, image head, and the fusion between them.

The order matters for honest numbers:
1. a validation split is held out first, grouped by de-duplicated text so that a
   product listed twice never sits on both sides;
2. on the training part, K-fold out-of-fold probabilities of both models train the
   fusion (never in-sample probabilities, which are over-confident);
3. the final text and image models are fit on the whole training part;
4. the bundle's metrics are measured on the validation split it never saw.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from core.common.errors import InputError
from core.common.images import file_hash
from core.data.catalogue import Catalogue
from core.data.splits import dedup_groups, grouped_folds, split_train_val
from core.models.bundle import BundleMetadata, new_version_id, package_versions
from core.models.options import DEFAULT_BACKBONE, DEFAULT_TEXT_ARCH
from core.models.tf_setup import seed_everything
from core.training.metrics import classification_metrics

ProgressFn = Callable[[str, float], None]
ReportFn = Callable[[float, str, str], None]  # (fraction, stage, message): JobContext.progress's signature

# Where each stage sits in the run's progress, [0, 1] (the out-of-fold models dominate: 80% of a run).
OOF_SPAN = (0.1, 0.6)
TEXT_SPAN = (0.6, 0.85)
IMAGE_SPAN = (0.85, 0.97)


# Training rows above which only the first of the K folds is predicted out of fold: a
# K-th of the rows (thousands) calibrates as well as all of them, at a fifth of the cost
# (on Myntra this is what keeps training within 2x the TF-IDF + LinearSVC baseline).
LARGE_CATALOGUE = 5000


@dataclass
class OutOfFold:
    """Predictions of models that never saw the row: per-level text scores (tfidf), text
    and photo probabilities over the tree's paths, and which rows have them."""

    margins: list | None
    seen: list | None  # per level: the row's true class was among its fold model's classes
    text: np.ndarray
    image: np.ndarray
    has_text: np.ndarray
    has_image: np.ndarray


@dataclass
class TrainConfig:
    text_arch: str = DEFAULT_TEXT_ARCH
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = "imagenet"  # None: random backbone (tests)
    folds: int = 5
    val_fraction: float = 0.15
    seed: int = 0
    text_epochs: int | None = None
    image_epochs: int = 40
    finetune: bool = False  # also train the backbone's top block on pixels (slower)
    finetune_epochs: int = 3
    min_leaf_rows: int = 1  # a tree node with fewer training rows backs off to its parent (see core.models.tree)


def data_fingerprint(texts, labels, image_paths) -> str:
    digest = hashlib.sha256()
    for t, l, p in zip(texts, labels, image_paths):
        h = file_hash(p) if p is not None and Path(p).is_file() else ""
        digest.update(json.dumps([t, l, h]).encode())
    return digest.hexdigest()[:16]


class Trainer:
    """Fits all parts of a bundle and returns a ready Classifier."""

    def __init__(self, config: TrainConfig | None = None, *, verbose: bool = True,
                 on_progress: ProgressFn | None = None, log: Callable[[str], None] | None = None,
                 callbacks: Callable[[str], list] | None = None, on_report: ReportFn | None = None):
        """`on_progress(stage, fraction)`: each stage change. `on_report(fraction, stage,
        message)`: the same plus, during every fit, which fold and epoch it is at
        ("out-of-fold 2/3 · text: epoch 4/12 · loss …"), so a long run never shows one
        message for minutes; message "" at a stage change. `callbacks(stage)`: extra Keras
        callbacks for the final fits ("text model", "image model"), e.g. TensorBoard logs."""
        self.config = config or TrainConfig()
        self.callbacks = callbacks or (lambda stage: [])
        self.verbose = verbose
        self.on_progress = on_progress or (lambda stage, fraction: None)
        self.on_report = on_report
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True) if verbose else None)

    def _stage(self, stage: str, fraction: float, message: str = "") -> None:
        self.on_progress(stage, fraction)
        if self.on_report is not None:
            self.on_report(fraction, stage, message)

    def _epochs(self, stage: str, what: str, span: tuple[float, float]) -> list:
        """A Keras callback reporting "<what>: epoch e/E · step s · loss …" into `span` of
        the run (none without on_report)."""
        if self.on_report is None:
            return []
        from core.training.tracking import ProgressCallback

        report = self.on_report
        return [ProgressCallback(lambda fraction, _what, message: report(fraction, stage, message), what, *span)]

    def _epoch_lines(self, what: str) -> list:
        """A Keras callback logging "<what>: epoch e/E · loss …" once an epoch (when verbose):
        the fits run with verbose=0, as Keras' bar goes to stdout, the CLI's JSON result."""
        if not self.verbose:
            return []
        from core.training.tracking import EpochLog

        return [EpochLog(self.log, what)]

    def _text_model(self, num_classes: list[int]):
        from core.models.text_model import TextModel

        return TextModel(self.config.text_arch, num_classes=num_classes, epochs=self.config.text_epochs,
                         seed=self.config.seed)

    def _image_model(self, num_classes: int):
        from core.models.image_model import ImageModel

        return ImageModel(self.config.backbone, num_classes=num_classes, weights=self.config.weights,
                          epochs=self.config.image_epochs, seed=self.config.seed)

    def fit(self, catalogue: Catalogue):
        """Text model, image head and fusion on the catalogue's trainable rows, validated
        on a split grouped by duplicate text; returns a Classifier with its metadata.

        Labels may be category paths ("A >> B >> C"): the model then learns the tree
        (core.models.tree); a flat label is a tree of one level."""
        from core.models.classifier import Classifier

        cfg, started = self.config, time.time()
        seed_everything(cfg.seed)  # before anything random, e.g. a --no-pretrained backbone
        texts, labels_raw, paths, tree = self._trainable_rows(catalogue)
        level_y, y = tree.targets(labels_raw)
        labels = tree.labels
        has_text = np.array([bool(t.strip()) for t in texts])
        image_model, emb, emb_flip, has_image = self._embed_images(paths, y, len(labels))
        use_text = has_text.sum() >= 2 and len(set(y[has_text]) - {-1}) >= 2

        train, val = split_train_val(y, dedup_groups(texts), cfg.val_fraction, cfg.seed)
        train, val = np.union1d(train, val[y[val] < 0]), val[y[val] >= 0]  # partial paths only train
        self.log(f"split: {len(train)} train, {len(val)} validation rows")
        # TF-IDF vocabularies are fitted once on all training texts (no labels involved),
        # so the out-of-fold and final text models only solve heads on one sparse matrix.
        text_rows = train[has_text[train]]
        featurizer = features = None
        if use_text and cfg.text_arch == "tfidf":
            from core.models.text_model import TfidfFeaturizer

            featurizer = TfidfFeaturizer().fit([texts[i] for i in text_rows])
            features = featurizer.transform([texts[i] for i in text_rows])

        oof = self._out_of_fold(texts, emb, emb_flip, level_y, y, tree, train, has_text, has_image, featurizer,
                                features, use_text=use_text, with_images=image_model is not None)
        temperatures = self._calibrate(tree, oof, level_y, y) if use_text else None
        fusion = self._fit_fusion(tree, oof, y, train, has_text, has_image)
        text_model = None
        if use_text:
            text_model = self._fit_text(texts, level_y, y, tree, text_rows, featurizer, features, temperatures)
        if image_model is not None:
            self._fit_image(image_model, emb, emb_flip, paths, y, train[has_image[train] & (y[train] >= 0)])

        classifier = Classifier(labels, text_model, image_model, fusion, tree=tree)
        metrics = self._validate(classifier, texts, paths, y, val) if len(val) else {}
        classifier.metadata = self._metadata(catalogue, labels, y, train, val, has_text, has_image, metrics,
                                             fusion, time.time() - started, texts, labels_raw, paths)
        classifier.metadata.tree = {"depth": tree.depth, "classes_per_level": [len(c) for c in tree.levels],
                                    "paths": len(labels), "decode_weights": [round(float(w), 4) for w in tree.weights],
                                    "temperatures": [round(t, 4) for t in temperatures or []],
                                    "min_rows": tree.min_rows}
        classifier.metadata.history = {  # per-epoch curves of the final fits (a solved tfidf head has none)
            name: model.history for name, model in (("text", text_model), ("image", image_model))
            if model is not None and getattr(model, "history", None)}
        self._stage("done", 1.0)
        return classifier

    def _trainable_rows(self, catalogue: Catalogue):
        """The rows to train on (labelled, with text or photo), their paths and the tree."""
        from core.models.tree import CategoryTree

        keep = np.flatnonzero(catalogue.trainable_mask())
        texts = [catalogue.texts[i] for i in keep]
        labels_raw = [catalogue.labels[i] for i in keep]
        paths = [catalogue.image_paths[i] for i in keep]
        tree = CategoryTree.from_paths(labels_raw, min_rows=self.config.min_leaf_rows) if labels_raw else None
        if tree is None or len(tree.labels) < 2:
            raise InputError(f"{catalogue.source}: training needs at least two classes with usable rows")
        shape = f"{len(tree.labels)} classes" if tree.is_flat else \
            f"a {tree.depth}-level tree ({' > '.join(str(len(c)) for c in tree.levels)} classes, {len(tree.labels)} paths)"
        self.log(f"training on {len(keep)} rows, {shape}")
        return texts, labels_raw, paths, tree

    def _embed_images(self, paths, y, num_classes: int):
        """Photos → cached backbone embeddings (and of the mirrored photo): the slow part,
        on a first run only. No image model when fewer than two classes have photos."""
        emb, has_image = np.zeros((len(paths), 0), "float32"), np.zeros(len(paths), bool)
        if not any(p is not None for p in paths):
            return None, emb, emb, has_image
        self._stage("image embeddings", 0.0)
        image_model = self._image_model(num_classes)
        emb, has_image = image_model.embed(paths, progress=self.verbose)
        emb_flip, _ = image_model.embed(paths, flip=True, progress=self.verbose)
        self.log(f"image embeddings: {int(has_image.sum())} images ({image_model.spec.name})")
        if has_image.sum() < 2 or len(set(y[has_image]) - {-1}) < 2:
            return None, emb, emb_flip, np.zeros(len(paths), bool)
        return image_model, emb, emb_flip, has_image

    def _calibrate(self, tree, oof, level_y, y) -> list[float]:
        """Temperatures of the text model's levels and the tree decode's weights, fitted on
        out-of-fold rows, so a 0.8 means right 8 times in 10. Without out-of-fold rows
        (a tiny catalogue) a typical temperature is used."""
        from core.models.text_model import DEFAULT_TEMPERATURE, fit_temperature, softmax

        if oof is None or oof.margins is None:
            return [DEFAULT_TEMPERATURE] * len(level_y)
        # A row whose true class its fold model never saw (a leaf with one or two products)
        # says nothing about how sure the model should be: it would only flatten the scores.
        rows = oof.has_text
        temperatures = [fit_temperature(m[rows & seen], target[rows & seen])
                        for m, target, seen in zip(oof.margins, level_y, oof.seen)]
        levels = [softmax(m[rows] / t) for m, t in zip(oof.margins, temperatures)]
        every_level_seen = np.logical_and.reduce(oof.seen)[rows]
        tree.fit_weights([p[every_level_seen] for p in levels], y[rows][every_level_seen])
        oof.text[rows] = tree.decode(levels)
        self.log(f"calibrated on {int(rows.sum())} out-of-fold rows: temperature "
                 f"{', '.join(f'{t:.3f}' for t in temperatures)}; decode weights "
                 f"{', '.join(f'{w:.2f}' for w in tree.weights)}")
        return temperatures

    def _fit_fusion(self, tree, oof, y, train, has_text, has_image):
        """The fusion, fitted on out-of-fold probabilities (only when both modalities exist)."""
        from core.models.fusion import Fusion

        fusion, cfg = Fusion(), self.config
        if oof is None:
            return fusion
        both = train[oof.has_text[train] & oof.has_image[train] & (y[train] >= 0)]
        if len(both) >= 2 * cfg.folds:
            fusion.fit(oof.text[both], oof.image[both], y[both], seed=cfg.seed)
            self.log(f"fusion ({fusion.kind}) fitted on {len(both)} out-of-fold rows")
        return fusion

    def _fit_text(self, texts, level_y, y, tree, rows, featurizer, features, temperatures):
        """The final text model on the whole training part: one solved head per level
        with its temperature and the tree decode on top (tfidf), or a bilstm on the paths."""
        self._stage("text model", TEXT_SPAN[0])
        self.log(f"text model ({self.config.text_arch}) on {len(rows)} rows")
        if self.config.text_arch != "tfidf":
            return self._text_model([len(tree.labels)]).fit(
                [texts[i] for i in rows], y[rows],
                callbacks=self.callbacks("text model") + self._epochs("text model", "text model", TEXT_SPAN)
                + self._epoch_lines("text model"))
        model = self._text_model([len(c) for c in tree.levels])
        model.fit([texts[i] for i in rows], [target[rows] for target in level_y], featurizer=featurizer,
                  features=features, on_level=self._level_reporter("text model", "text model", TEXT_SPAN, tree))
        return model.finalize(temperatures, tree)

    def _level_reporter(self, stage: str, what: str, span: tuple[float, float], tree):
        """on_level for the solver: "<what>: level k/K (n classes)" in the log and the job's progress."""
        def report(k: int, levels: int) -> None:
            message = f"{what}: level {k}/{levels} ({len(tree.levels[k - 1])} classes)"
            if self.on_report is not None:
                self.on_report(span[0] + (span[1] - span[0]) * (k - 1) / levels, stage, message)
            if self.verbose and stage != "out-of-fold models":
                self.log(message)
        return report

    def _fit_image(self, image_model, emb, emb_flip, paths, y, rows) -> None:
        """The final image head on the whole training part (then, if asked, the fine-tuning)."""
        cfg = self.config
        self._stage("image model", IMAGE_SPAN[0])
        self.log(f"image head on {len(rows)} rows")
        image_model.fit(emb[rows], y[rows], flipped=emb_flip[rows],
                        callbacks=self.callbacks("image model") + self._epochs("image model", "image model",
                                                                               IMAGE_SPAN))
        if cfg.finetune:
            self.log(f"fine-tuning the top block of {cfg.backbone} on {len(rows)} images")
            image_model.finetune([paths[i] for i in rows], y[rows], epochs=cfg.finetune_epochs,
                                 callbacks=self._epoch_lines("fine-tuning"))

    def _out_of_fold(self, texts, emb, emb_flip, level_y, y, tree, train, has_text, has_image, featurizer,
                     features, *, use_text: bool, with_images: bool) -> "OutOfFold | None":
        """K-fold predictions for every training row from models that never saw it: what
        the calibration (text) and the fusion (text + photo) are fitted on."""
        cfg = self.config
        folds = grouped_folds(y[train], dedup_groups([texts[i] for i in train]), cfg.folds, cfg.seed + 1)
        if len(train) > LARGE_CATALOGUE:  # one held-out fold: thousands of rows, plenty to calibrate on
            folds = folds[:1]
        if not folds or not (use_text or with_images):
            self.log("too few rows per class for out-of-fold models: no calibration, fused = text where both exist")
            return None
        n, tfidf = len(y), cfg.text_arch == "tfidf"
        oof = OutOfFold(margins=[np.zeros((n, len(c)), "float32") for c in tree.levels] if use_text and tfidf else None,
                        seen=[np.zeros(n, bool) for _ in tree.levels],
                        text=np.zeros((n, len(tree.labels)), "float32"),
                        image=np.zeros((n, len(tree.labels)), "float32"),
                        has_text=np.zeros(n, bool), has_image=np.zeros(n, bool))
        text_rows = train[has_text[train]]
        position = {row: k for k, row in enumerate(text_rows)}
        iterator = folds
        if self.verbose:
            from tqdm import tqdm

            iterator = tqdm(folds, desc="out-of-fold models", unit="fold", file=sys.stderr)
        start, end = OOF_SPAN
        width = (end - start) / len(folds)
        for k, (fit_idx, pred_idx) in enumerate(iterator):
            fold = f"out-of-fold {k + 1}/{len(folds)}"
            a = start + width * k
            self._stage("out-of-fold models", a, fold)
            fit_rows, pred_rows = train[fit_idx], train[pred_idx]
            t_fit, t_pred = fit_rows[has_text[fit_rows]], pred_rows[has_text[pred_rows]]
            if use_text and len(t_pred) and len(t_fit):
                if tfidf:
                    sub = lambda rows: [m[[position[i] for i in rows]] for m in features]  # noqa: E731
                    model = self._text_model([len(c) for c in tree.levels]).fit(
                        [texts[i] for i in t_fit], [target[t_fit] for target in level_y], featurizer=featurizer,
                        features=sub(t_fit),
                        on_level=self._level_reporter("out-of-fold models", f"{fold} · text", (a, a + width / 2), tree))
                    for level, m in zip(oof.margins, model.margins(sub(t_pred))):
                        level[t_pred] = m
                    for seen, target in zip(oof.seen, level_y):
                        seen[t_pred] = np.isin(target[t_pred], target[t_fit])
                else:
                    keep = t_fit[y[t_fit] >= 0]
                    model = self._text_model([len(tree.labels)]).fit(
                        [texts[i] for i in keep], y[keep],
                        callbacks=self._epochs("out-of-fold models", f"{fold} · text", (a, a + width / 2)))
                    oof.text[t_pred] = model.predict_proba([texts[i] for i in t_pred])
                oof.has_text[t_pred] = True
            i_fit = fit_rows[has_image[fit_rows] & (y[fit_rows] >= 0)]
            i_pred = pred_rows[has_image[pred_rows]]
            if with_images and len(i_pred) and len(i_fit):
                model = self._image_model(len(tree.labels)).fit(
                    emb[i_fit], y[i_fit], flipped=emb_flip[i_fit],
                    callbacks=self._epochs("out-of-fold models", f"{fold} · photo", (a + width / 2, a + width)))
                oof.image[i_pred] = model.predict_proba_embeddings(emb[i_pred])
                oof.has_image[i_pred] = True
        return oof

    def _validate(self, classifier, texts, paths, y, val) -> dict:
        """Metrics on the held-out rows, predicted exactly as `predict` would (the image
        path re-embeds through the final backbone, which fine-tuning may have changed)."""
        result = classifier.predict_batch([texts[i] for i in val], [paths[i] for i in val])
        truth = [classifier.labels[i] for i in y[val]]
        metrics = evaluation_metrics(classifier.labels, truth, result.fused, result.text, result.has_text,
                                     result.image, result.has_image)
        if not classifier.tree.is_flat:  # per level, for the Models page and `train`'s summary
            from core.training.tree_metrics import batch_models, tree_report

            metrics["tree"] = tree_report(truth, batch_models(result), valid_paths=classifier.tree.prefixes(),
                                          depth=classifier.tree.depth)
        return metrics

    def _metadata(self, catalogue, labels, y, train, val, has_text, has_image, metrics, fusion, seconds,
                  texts, labels_raw, paths) -> BundleMetadata:
        cfg = self.config
        return BundleMetadata(
            version=new_version_id(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            data_fingerprint=data_fingerprint(texts, labels_raw, paths),
            source={"path": str(catalogue.source), "text_cols": catalogue.text_cols,
                    "label_col": catalogue.label_col, "label_level": catalogue.label_level,
                    "label_depth": catalogue.label_depth,
                    "image_col": catalogue.image_col},
            rows={"catalogue": len(catalogue), "used": len(y), "train": len(train), "validation": len(val),
                  "with_text": int(has_text.sum()), "with_image": int(has_image.sum()),
                  "per_class": {l: int(n) for l, n in zip(labels, np.bincount(y[y >= 0], minlength=len(labels)))},
                  "per_class_train": {l: int(n) for l, n in
                                      zip(labels, np.bincount(y[train][y[train] >= 0], minlength=len(labels)))},
                  "partial_paths": int((y < 0).sum())},
            metrics={"validation": metrics},
            text_arch=cfg.text_arch,
            backbone=cfg.backbone,
            fusion={"kind": fusion.kind if fusion.fitted else "single_modality", "C": fusion.C},
            config=asdict(cfg),
            train_seconds=round(seconds, 1),
            packages=package_versions(),
        )


def evaluation_metrics(labels, y_true, fused, p_text, has_text, p_image, has_image) -> dict:
    """Metrics for fused, text-only and image-only predictions; each over the rows
    where that prediction exists (so the numbers say how many rows they cover)."""
    def metrics(probs, mask):
        idx = np.flatnonzero(mask)
        return classification_metrics([y_true[i] for i in idx], [labels[int(np.argmax(probs[i]))] for i in idx], labels)

    fused_mask = has_text | has_image
    return {"fused": metrics(fused, fused_mask), "text": metrics(p_text, has_text),
            "image": metrics(p_image, has_image),
            "rows": {"total": len(y_true), "unusable": int((~fused_mask).sum())}}
