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

    def _text_model(self, num_classes: int):
        from core.models.text_model import TextModel

        return TextModel(self.config.text_arch, num_classes=num_classes, epochs=self.config.text_epochs,
                         seed=self.config.seed)

    def _image_model(self, num_classes: int):
        from core.models.image_model import ImageModel

        return ImageModel(self.config.backbone, num_classes=num_classes, weights=self.config.weights,
                          epochs=self.config.image_epochs, seed=self.config.seed)

    def fit(self, catalogue: Catalogue):
        """Text model, image head and fusion on the catalogue's trainable rows, validated
        on a split grouped by duplicate text; returns a Classifier with its metadata."""
        from core.models.classifier import Classifier

        cfg, started = self.config, time.time()
        seed_everything(cfg.seed)  # before anything random, e.g. a --no-pretrained backbone
        texts, labels_raw, paths, labels, y = self._trainable_rows(catalogue)
        has_text = np.array([bool(t.strip()) for t in texts])
        image_model, emb, emb_flip, has_image = self._embed_images(paths, y, len(labels))
        use_text = has_text.sum() >= 2 and len(set(y[has_text])) >= 2

        train, val = split_train_val(y, dedup_groups(texts), cfg.val_fraction, cfg.seed)
        self.log(f"split: {len(train)} train, {len(val)} validation rows")
        # TF-IDF vocabularies are fitted once on all training texts (no labels involved),
        # so the out-of-fold and final text models only train heads on one sparse matrix.
        text_rows = train[has_text[train]]
        featurizer = features = None
        if use_text and cfg.text_arch == "tfidf":
            from core.models.text_model import TfidfFeaturizer

            featurizer = TfidfFeaturizer().fit([texts[i] for i in text_rows])
            features = featurizer.transform([texts[i] for i in text_rows])

        fusion = self._fit_fusion(texts, emb, emb_flip, y, train, has_text, has_image, len(labels), featurizer,
                                  features, use_text=use_text, with_images=image_model is not None)
        text_model = self._fit_text(texts, y, text_rows, len(labels), featurizer, features) if use_text else None
        if image_model is not None:
            self._fit_image(image_model, emb, emb_flip, paths, y, train[has_image[train]])

        classifier = Classifier(labels, text_model, image_model, fusion)
        metrics = self._validate(classifier, texts, paths, y, val) if len(val) else {}
        classifier.metadata = self._metadata(catalogue, labels, y, train, val, has_text, has_image, metrics,
                                             fusion, time.time() - started, texts, labels_raw, paths)
        classifier.metadata.history = {  # per-epoch curves of the final fits, for the Models page
            name: getattr(model, "history", None) or {} for name, model in (("text", text_model), ("image", image_model))
            if model is not None}
        self._stage("done", 1.0)
        return classifier

    def _trainable_rows(self, catalogue: Catalogue):
        """The rows to train on (labelled, with text or photo), their classes and class ids."""
        keep = np.flatnonzero(catalogue.trainable_mask())
        texts = [catalogue.texts[i] for i in keep]
        labels_raw = [catalogue.labels[i] for i in keep]
        paths = [catalogue.image_paths[i] for i in keep]
        labels = sorted(set(labels_raw))
        if len(labels) < 2:
            raise InputError(f"{catalogue.source}: training needs at least two classes with usable rows")
        self.log(f"training on {len(keep)} rows, {len(labels)} classes")
        return texts, labels_raw, paths, labels, np.array([labels.index(label) for label in labels_raw])

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
        if has_image.sum() < 2 or len(set(y[has_image])) < 2:
            return None, emb, emb_flip, np.zeros(len(paths), bool)
        return image_model, emb, emb_flip, has_image

    def _fit_fusion(self, texts, emb, emb_flip, y, train, has_text, has_image, num_classes, featurizer, features,
                    *, use_text: bool, with_images: bool):
        """The fusion, fitted on out-of-fold probabilities (only when both modalities exist)."""
        from core.models.fusion import Fusion

        fusion, cfg = Fusion(), self.config
        both_train = train[has_text[train] & has_image[train]]
        if use_text and with_images and len(both_train) >= 2 * cfg.folds:
            oof = self._out_of_fold(texts, emb, emb_flip, y, train, has_text, has_image, num_classes,
                                    featurizer, features)
            if oof is not None:
                fusion.fit(oof[0][both_train], oof[1][both_train], y[both_train], seed=cfg.seed)
                self.log(f"fusion ({fusion.kind}) fitted on {len(both_train)} out-of-fold rows")
        return fusion

    def _fit_text(self, texts, y, rows, num_classes: int, featurizer, features):
        """The final text model on the whole training part."""
        self._stage("text model", TEXT_SPAN[0])
        self.log(f"text model ({self.config.text_arch}) on {len(rows)} rows")
        return self._text_model(num_classes).fit(
            [texts[i] for i in rows], y[rows], featurizer=featurizer, features=features,
            callbacks=self.callbacks("text model") + self._epochs("text model", "text model", TEXT_SPAN)
            + self._epoch_lines("text model"))

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

    def _out_of_fold(self, texts, emb, emb_flip, y, train, has_text, has_image, num_classes,
                     featurizer, features):
        cfg = self.config
        oof_text = np.zeros((len(y), num_classes), "float32")
        oof_image = np.zeros((len(y), num_classes), "float32")
        folds = grouped_folds(y[train], dedup_groups([texts[i] for i in train]), cfg.folds, cfg.seed + 1)
        if not folds:
            self.log("too few rows per class for out-of-fold models: fused = text where both exist")
            return None
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
            if len(t_pred) and len(t_fit):
                fold_features = None if features is None else [m[[position[i] for i in t_fit]] for m in features]
                model = self._text_model(num_classes).fit(
                    [texts[i] for i in t_fit], y[t_fit], featurizer=featurizer, features=fold_features,
                    callbacks=self._epochs("out-of-fold models", f"{fold} · text", (a, a + width / 2)))
                oof_text[t_pred] = model.predict_proba([texts[i] for i in t_pred])
            i_fit, i_pred = fit_rows[has_image[fit_rows]], pred_rows[has_image[pred_rows]]
            if len(i_pred) and len(i_fit):
                model = self._image_model(num_classes).fit(
                    emb[i_fit], y[i_fit], flipped=emb_flip[i_fit],
                    callbacks=self._epochs("out-of-fold models", f"{fold} · photo", (a + width / 2, a + width)))
                oof_image[i_pred] = model.predict_proba_embeddings(emb[i_pred])
        return oof_text, oof_image

    def _validate(self, classifier, texts, paths, y, val) -> dict:
        """Metrics on the held-out rows, predicted exactly as `predict` would (the image
        path re-embeds through the final backbone, which fine-tuning may have changed)."""
        result = classifier.predict_batch([texts[i] for i in val], [paths[i] for i in val])
        return evaluation_metrics(classifier.labels, [classifier.labels[i] for i in y[val]], result.fused,
                                  result.text, result.has_text, result.image, result.has_image)

    def _metadata(self, catalogue, labels, y, train, val, has_text, has_image, metrics, fusion, seconds,
                  texts, labels_raw, paths) -> BundleMetadata:
        cfg = self.config
        return BundleMetadata(
            version=new_version_id(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            data_fingerprint=data_fingerprint(texts, labels_raw, paths),
            source={"path": str(catalogue.source), "text_cols": catalogue.text_cols,
                    "label_col": catalogue.label_col, "label_level": catalogue.label_level,
                    "image_col": catalogue.image_col},
            rows={"catalogue": len(catalogue), "used": len(y), "train": len(train), "validation": len(val),
                  "with_text": int(has_text.sum()), "with_image": int(has_image.sum()),
                  "per_class": {l: int(n) for l, n in zip(labels, np.bincount(y, minlength=len(labels)))},
                  "per_class_train": {l: int(n) for l, n in
                                      zip(labels, np.bincount(y[train], minlength=len(labels)))}},
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
