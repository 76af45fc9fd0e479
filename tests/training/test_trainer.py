"""core.training.trainer splits: grouped by duplicate text, stratified, tolerant of tiny classes."""

from __future__ import annotations

import numpy as np
import pytest

from core.data.splits import dedup_groups
from core.data.splits import grouped_folds, split_train_val


@pytest.mark.parametrize("labels", [np.repeat(["Watches", "Toys", "Mugs"], 20), np.repeat([0, 1, 2], 20)])
def test_folds_never_split_a_duplicated_text(labels):
    texts = [f"product {i // 2}" for i in range(len(labels))]  # every text twice, same label
    groups = dedup_groups(texts)
    folds = grouped_folds(labels, groups, 5, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(labels), int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert set(labels[test]) == set(labels)  # stratified: every class in every fold
        seen[test] += 1
    assert (seen == 1).all()


def test_fold_count_shrinks_to_the_largest_class():
    labels = np.array(["a"] * 3 + ["b"] * 2)
    assert len(grouped_folds(labels, np.arange(5), 5, seed=0)) == 3
    assert grouped_folds(np.array(["a", "b"]), np.arange(2), 5, seed=0) == []


def test_validation_split_size_and_disjointness():
    labels = np.repeat(["x", "y"], 50)
    train, val = split_train_val(labels, np.arange(100), 0.2, seed=1)
    assert len(val) == 20 and not set(train) & set(val) and len(train) + len(val) == 100
    train, val = split_train_val(labels, np.arange(100), 0.0, seed=1)
    assert len(train) == 100 and len(val) == 0


# --------------------------------------------------------------------------- progress


def test_the_training_job_names_the_fold_the_level_and_the_epoch(make_catalogue, tmp_path, studio_home, monkeypatch):
    """The out-of-fold stage is most of a run (330 of 407 s on Flipkart): the jobs table
    (what the Models page shows) must say which fold and epoch it is at, through the real
    job (core.studio.retrain → core.training.trainer → core.studio.jobs), not one message for minutes."""
    from helpers.studio import cheap_hashes, make_users

    from core.data.catalogue import load_catalogue
    from core.studio.jobs import Job, JobContext, get_job
    from core.studio.labels import import_catalogue
    from core.studio.retrain import start_training
    from core.studio.store import Store
    from core.training.trainer import TrainConfig

    cheap_hashes(monkeypatch)
    store = Store()
    admin = make_users(store)["admin"]
    cat = make_catalogue(tmp_path, n_per_class=8, image_size=(40, 32), seed=2)
    import_catalogue(store, admin, load_catalogue(cat.csv_path, **cat.load_kwargs), "shop")
    rows: list[Job] = []
    original = JobContext.progress

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        original(self, fraction, stage, message)
        rows.append(get_job(self.store, self.job_id))  # read back from the table

    monkeypatch.setattr(JobContext, "progress", progress)
    config = TrainConfig(weights=None, folds=2, text_epochs=2, image_epochs=3, seed=0)
    job = get_job(store, start_training(store, admin, config, background=False))
    assert job.state == "done", job
    messages = [r.message for r in rows]
    for k in (1, 2):  # every fold's text and photo fit names its fold, its level or epoch, to the last
        assert f"out-of-fold {k}/2" in messages
        assert any(m.startswith(f"out-of-fold {k}/2 · text: level 1/1") for m in messages), messages
        assert any(m.startswith(f"out-of-fold {k}/2 · photo: epoch 3/3") for m in messages), messages
    assert {r.stage for r in rows if r.message.startswith("out-of-fold")} == {"out-of-fold models"}
    assert any(m.startswith("text model: level 1/1") for m in messages)  # the final fits too
    assert any(m.startswith("image model: epoch 3/3") for m in messages)
    assert "embedding photos" in messages and "scoring the evaluation slice" in messages
    fractions = [r.progress for r in rows]
    assert fractions == sorted(fractions)
