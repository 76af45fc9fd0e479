"""Train a new model version from the database (catalogue + reviewers' decisions) as a
background job, save it as a bundle, register it, and score it on the frozen
evaluation slice. The live model changes only when an admin activates the new version
(or when there is no live model at all yet).
"""

from __future__ import annotations

from dataclasses import asdict

from core.auth import User
from core.errors import InputError
from core.jobs import JobContext, start_job
from core.registry import live_model, register_model
from core.settings import get_settings
from core.store import Store
from core.train import TrainConfig
from core.training_data import as_catalogue, labelled_products

STAGES = {"image embeddings": "embedding photos", "text model": "training the text model",
          "image model": "training the image model", "done": "saving"}


def evaluate_on_slice(store: Store, classifier) -> dict:
    """Fused / text / image metrics of `classifier` on the frozen evaluation slice."""
    from core.train import evaluation_metrics

    frame = labelled_products(store, "eval")
    frame = frame[frame["label"].isin(classifier.labels)]
    if frame.empty:
        return {}
    catalogue = as_catalogue(frame, "eval slice")
    result = classifier.predict_batch(catalogue.texts, catalogue.image_paths)
    return evaluation_metrics(classifier.labels, catalogue.labels, result.fused, result.text, result.has_text,
                              result.image, result.has_image)


def _train(context: JobContext, params: dict) -> dict:
    from core.train import Trainer

    store = context.store
    frame = labelled_products(store, "train")
    if frame.empty:
        raise InputError("there are no labelled products yet: import a labelled catalogue first")
    catalogue = as_catalogue(frame, "store")
    context.progress(0.02, "loading", f"{len(frame):,} labelled products")

    def on_progress(stage: str, fraction: float) -> None:
        context.progress(0.05 + 0.85 * fraction, stage, STAGES.get(stage, stage))

    classifier = Trainer(TrainConfig(**params["config"]), verbose=False, on_progress=on_progress).fit(catalogue)
    context.progress(0.92, "evaluating", "scoring the evaluation slice")
    classifier.metadata["metrics"]["eval_slice"] = evaluate_on_slice(store, classifier)
    classifier.metadata["trained_from"] = {"rows": len(frame), "reviewed": int(frame["reviewed_label"].notna().sum())}
    version = classifier.metadata["version"]
    path = classifier.save(get_settings().models_dir / version)
    register_model(store, path, created_by=params["user"], activate=live_model(store) is None)
    return {"version": version, "path": str(path), "metrics": classifier.metadata["metrics"]}


def start_training(store: Store, user: User, config: TrainConfig | None = None, *, background: bool = True) -> int:
    """Start a training job (JobBusy if one runs); returns the job id."""
    config = config or TrainConfig()
    return start_job(store, user, "train", {"config": asdict(config), "user": user.username}, _train,
                     background=background)
