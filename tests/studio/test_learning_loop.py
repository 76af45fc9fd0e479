"""The learning loop end to end, offline: a generated catalogue imported into a real
SQLite store (with its frozen evaluation slice), reviewers' corrections feeding the next
training, training as a job (TensorBoard logs, registration, failure, one at a time),
candidate vs live comparison, promote and rollback, suspected mislabels (CLI and job +
review queue), and `python -m core train --from-store`.

Real small TensorFlow models throughout (random-weight backbones); to keep the module
quick only one model is trained with photos (module fixture `trained`), the others
are text-only."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.catalogues import write_catalogue
from helpers.cli import run_cli, stderr_lines
from helpers.studio import cheap_hashes, count, make_users

from core.common.errors import InputError
from core.data.catalogue import load_catalogue
from core.studio.auth import User
from core.studio.store import Store

TRAIN_CONFIG = dict(weights=None, folds=2, text_epochs=6, image_epochs=10)


def catalogue_products(store: Store, split: str | None = None) -> list[dict]:
    sql = "SELECT * FROM products WHERE source LIKE 'catalogue:%'" + (" AND split = ?" if split else "")
    return store.query(sql + " ORDER BY id", [split] if split else [])


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["title", "description", "category", "image"])
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------- 1. import


def test_import_catalogue_freezes_an_eval_split_and_skips_what_it_has(studio_home, tmp_path, monkeypatch):
    from core.studio.labels import EVAL_PERCENT, import_catalogue, split_of

    cheap_hashes(monkeypatch)
    cat = write_catalogue(tmp_path / "cat", n_per_class=30, seed=5)
    rows = list(cat.rows)
    # an exact copy of row 1 (a duplicate), and a new product reusing row 2's photo
    rows.append(dict(rows[0]))
    rows.append({**rows[1], "title": "Nova wrist strap spare", "description": "A spare strap"})
    rows.append({"title": "", "description": "", "category": "Toys", "image": ""})  # unusable
    csv_path = write_rows(cat.csv_path, rows)
    catalogue = load_catalogue(csv_path, **cat.load_kwargs)
    store = Store()
    admin = make_users(store)["admin"]

    summary = import_catalogue(store, admin, catalogue, "shop")
    # the copy of row 1 is the same product (same text and photo): counted unchanged, not added twice
    assert (summary.source, summary.added, summary.updated, summary.unchanged, summary.unusable) == (
        "catalogue:shop", 91, 0, 1, 1)
    expected = {c: cat.labels.count(c) for c in cat.classes}
    expected[rows[1]["category"]] += 1  # the new product with row 2's photo
    assert summary.per_class == expected
    products = catalogue_products(store)
    assert len(products) == 91
    assert all(p["true_label"] in cat.classes and p["source"] == "catalogue:shop" for p in products)
    assert {p["split"] for p in products} == {"train", "eval"}
    eval_rows = [p for p in products if p["split"] == "eval"]
    assert summary.eval_rows == len(eval_rows)
    assert 0.05 <= len(eval_rows) / len(products) <= 0.30, len(eval_rows)  # ~15 %
    # the split follows the text: the same text always lands on the same side
    for p in products:
        assert p["split"] == split_of(p["text"], p["image_hash"])
    assert split_of("  Acme WATCH dial ") == split_of("acme watch   dial")
    buckets = [split_of(f"product number {i}") for i in range(2000)]
    assert abs(buckets.count("eval") / 2000 - EVAL_PERCENT / 100) < 0.03
    # photos are stored once: 90 distinct photos for 91 products, one file each
    assert count(store, "images") == 90
    assert len({p["image_hash"] for p in products}) == 90
    files = [f for f in (studio_home / "data" / "images").rglob("*") if f.is_file()]
    assert len(files) == 90
    assert store.one("SELECT COUNT(*) AS n FROM audit WHERE action = 'catalogue.import'")["n"] == 1

    # a re-import adds nothing and finds every row unchanged
    again = import_catalogue(store, admin, catalogue, "shop")
    assert (again.added, again.updated, again.unchanged, again.eval_rows) == (0, 0, 92, 0)
    assert len(catalogue_products(store)) == 91 and count(store, "images") == 90
    assert len([f for f in (studio_home / "data" / "images").rglob("*") if f.is_file()]) == 90


def test_import_needs_the_train_permission(studio_home, tmp_path, monkeypatch):
    from core.studio.auth import PermissionDenied
    from core.studio.labels import import_catalogue

    cheap_hashes(monkeypatch)
    cat = write_catalogue(tmp_path / "cat", n_per_class=2, with_images=False)
    store = Store()
    users = make_users(store, ("rita", "reviewer"))
    with pytest.raises(PermissionDenied):
        import_catalogue(store, users["rita"], load_catalogue(cat.csv_path, **cat.load_kwargs), "x")
    assert count(store, "products") == 0


# --------------------------------------------------------------------------- shared home


@dataclass
class Loop:
    home: Path
    store: Store
    users: dict[str, User]
    root: Path


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Loop:
    """A home with an imported catalogue (3 classes × 14, photos) and an admin and two
    reviewers. Module-scoped: the tests below share it (and the model trained on it)."""
    from core.studio.labels import import_catalogue

    root = tmp_path_factory.mktemp("loop")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(root / "home"))
        cheap_hashes(mp)
        cat = write_catalogue(root / "catalogue", n_per_class=14, image_size=(64, 48), seed=3)
        store = Store()
        users = make_users(store, ("rev1", "reviewer"), ("rev2", "reviewer"))
        summary = import_catalogue(store, users["admin"], load_catalogue(cat.csv_path, **cat.load_kwargs), "shop")
        assert summary.added == 42 and summary.eval_rows >= 3
        yield Loop(root / "home", store, users, root)


@pytest.fixture
def home_env(loop, monkeypatch) -> Loop:
    monkeypatch.setenv("STUDIO_HOME", str(loop.home))
    return loop


@pytest.fixture(scope="module")
def trained(loop) -> dict:
    """Reviewers' decisions on train-split products, then one real training job."""
    from core.studio.jobs import get_job
    from core.studio.retrain import start_training
    from core.studio.review_queue import record_review
    from core.training.trainer import TrainConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(loop.home))
        store, users = loop.store, loop.users
        train = catalogue_products(store, "train")
        others = lambda label: [c for c in ("Kitchen", "Toys", "Watches") if c != label]  # noqa: E731
        corrected, conflict = train[0], train[1]
        to_label = others(corrected["true_label"])[0]
        record_review(store, users["rev1"], corrected["id"], "correct", new_label=to_label)
        first, second = others(conflict["true_label"])
        record_review(store, users["rev1"], conflict["id"], "correct", new_label=first)
        record_review(store, users["rev2"], conflict["id"], "correct", new_label=second)
        accepted = train[2]
        record_review(store, users["rev2"], accepted["id"], "accept")
        record_review(store, users["rev2"], train[3]["id"], "skip")  # a skip is no label
        job_id = start_training(store, users["admin"], TrainConfig(**TRAIN_CONFIG), background=False)
        return {"job": get_job(store, job_id), "corrected": (corrected, to_label), "conflict": (conflict, first, second),
                "accepted": accepted, "skipped": train[3]}


# --------------------------------------------------------------------------- 2. corrections → training


def test_a_correction_changes_the_next_models_training_label(home_env, trained):
    from core.models.bundle import read_metadata
    from core.studio.labels import as_catalogue, label_conflicts, labelled_products
    from core.studio.registry import get_model, live_model
    from core.studio.review_queue import reviews_of
    from core.training.trainer import data_fingerprint

    store = home_env.store
    corrected, to_label = trained["corrected"]
    conflict, first, second = trained["conflict"]
    # reviews of catalogue items (no prediction) keep the catalogue label as old_label
    review = reviews_of(store, corrected["id"])[0]
    assert (review["prediction_id"], review["old_label"], review["new_label"]) == (None, corrected["true_label"],
                                                                                    to_label)
    assert [r["old_label"] for r in reviews_of(store, conflict["id"])] == [conflict["true_label"], first]

    frame = labelled_products(store, "train").set_index("id")
    assert len(frame) == len(catalogue_products(store, "train"))
    assert set(frame["split"]) == {"train"}
    assert frame.loc[corrected["id"], "label"] == to_label and frame.loc[corrected["id"], "reviewer"] == "rev1"
    assert frame.loc[conflict["id"], "label"] == second and frame.loc[conflict["id"], "reviewer"] == "rev2"
    accepted = trained["accepted"]
    assert frame.loc[accepted["id"], "label"] == accepted["true_label"] == frame.loc[accepted["id"], "reviewed_label"]
    skipped = trained["skipped"]
    assert frame.loc[skipped["id"], "label"] == skipped["true_label"] and pd.isna(frame.loc[skipped["id"], "reviewed_label"])
    untouched = frame[frame["reviewed_label"].isna()]
    assert (untouched["label"] == untouched["true_label"]).all()
    assert len(labelled_products(store, "eval")) == len(catalogue_products(store, "eval"))

    conflicts = label_conflicts(store)
    assert conflicts["product_id"].tolist() == [conflict["id"]]
    assert conflicts["labels"].tolist() == [2]
    assert f"rev1: {first}" in conflicts["decisions"][0] and f"rev2: {second}" in conflicts["decisions"][0]

    job = trained["job"]
    assert job.state == "done" and job.progress == 1.0 and job.error is None and job.finished_at
    result = job.result
    reviewed = int(frame["reviewed_label"].notna().sum())
    assert reviewed == 3  # corrected, conflict, accepted (the skip is no decision)
    assert result["trained_from"]["reviewed"] == reviewed
    assert result["trained_from"]["rows"] == len(frame)
    last_review = store.one("SELECT MAX(id) AS m FROM reviews WHERE created_at <= ?", [job.started_at])["m"]
    assert result["trained_from"]["last_review_id"] == last_review == 5

    path = Path(result["path"])
    assert path == home_env.home / "models" / result["version"] and path.is_dir()
    metadata = read_metadata(path)
    assert metadata.version == result["version"]
    assert metadata.trained_from == result["trained_from"]
    # the model was trained on the effective labels: corrected ones included
    expected = as_catalogue(labelled_products(store, "train"))
    assert metadata.data_fingerprint == data_fingerprint(expected.texts, expected.labels, expected.image_paths)
    assert metadata.rows["per_class"] == frame["label"].value_counts().to_dict()
    eval_slice = metadata.metrics["eval_slice"]
    assert eval_slice["fused"]["n"] == len(catalogue_products(store, "eval"))
    assert eval_slice["fused"]["accuracy"] >= 0.5  # chance 1/3
    assert set(metadata.history) == {"image"}  # the text head is solved exactly: no epochs to draw
    assert len(metadata.history["image"]["loss"]) == 10
    registered = get_model(store, result["version"])
    assert registered is not None and registered.created_by == "admin"
    assert live_model(store).version == result["version"]  # the first model goes live
    runs = home_env.home / "data" / "runs" / f"job-{job.id}"
    assert Path(result["tensorboard"]) == runs
    # the image head's epochs are logged; the tfidf text head is solved, not trained in epochs
    assert list((runs / "image_model").rglob("events.out.tfevents.*"))


# --------------------------------------------------------------------------- 3. a crash


def test_a_crashed_training_keeps_the_live_model_and_fails_the_job(home_env, trained):
    import signal
    import time

    from core.studio.jobs import get_job, latest_job, wait
    from core.studio.registry import list_models, live_model
    from core.studio.retrain import start_training
    from core.training.trainer import TrainConfig

    store = home_env.store
    live = live_model(store)
    assert live is not None
    before = sorted(m.version for m in list_models(store))
    folders = sorted((home_env.home / "models").iterdir())

    # the worker process dies mid-training (killed, as by the out-of-memory killer)
    job_id = start_training(store, home_env.users["admin"], TrainConfig(**TRAIN_CONFIG))
    pid = get_job(store, job_id).pid
    deadline = time.monotonic() + 120
    while get_job(store, job_id).progress <= 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # until the worker is really training
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while latest_job(store, "train").state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    job = get_job(store, job_id)
    assert job.state == "failed" and "stopped before finishing" in job.error
    assert live_model(store).version == live.version
    assert sorted(m.version for m in list_models(store)) == before
    assert sorted((home_env.home / "models").iterdir()) == folders

    # the worker process raises: the job says why, with the traceback
    job = wait(store, start_training(store, home_env.users["admin"],
                                     TrainConfig(**{**TRAIN_CONFIG, "backbone": "no-such-net"})), timeout=120)
    assert job.state == "failed" and "unknown backbone" in job.error
    assert "Traceback" in job.result["traceback"]
    assert live_model(store).version == live.version

    # a config that cannot work fails the same way (inline, as the CLI runs it: raised)
    with pytest.raises(ValueError, match="unknown backbone"):
        start_training(store, home_env.users["admin"], TrainConfig(**{**TRAIN_CONFIG, "backbone": "no-such-net"}),
                       background=False)
    assert latest_job(store, "train").state == "failed"
    assert live_model(store).version == live.version
    assert sorted(m.version for m in list_models(store)) == before


# --------------------------------------------------------------------------- 4. one at a time


@pytest.fixture
def job_store(studio_home, monkeypatch) -> tuple[Store, User]:
    cheap_hashes(monkeypatch)
    store = Store()
    return store, make_users(store)["admin"]


def blocking_job(store, admin, kind="train") -> tuple[int, threading.Event]:
    from core.studio.jobs import start_job

    release, started = threading.Event(), threading.Event()

    def work(context, params):
        context.progress(0.5, "waiting", "blocked on the test")
        started.set()
        assert release.wait(30)
        return {"ok": True}

    job_id = start_job(store, admin, work, {"test": True}, kind=kind)
    assert started.wait(10)
    return job_id, release


def test_two_trainings_cannot_run_at_once(job_store):
    from core.studio.jobs import JobBusy, get_job, latest_job, list_jobs, start_job, wait
    from core.studio.retrain import start_training
    from core.training.trainer import TrainConfig

    store, admin = job_store
    job_id, release = blocking_job(store, admin)
    try:
        assert get_job(store, job_id).state == "running"
        with pytest.raises(JobBusy, match=rf"#{job_id}.*still running"):
            start_training(store, admin, TrainConfig(**TRAIN_CONFIG))
        with pytest.raises(JobBusy):
            start_job(store, admin, lambda c, p: {}, {}, kind="train", background=False)
        # another kind is not blocked
        other = start_job(store, admin, lambda c, p: {"n": 1}, {}, kind="suspects", background=False)
        assert get_job(store, other).state == "done"
        assert latest_job(store, "train").id == job_id  # still running: not reaped
        assert get_job(store, job_id).progress == 0.5
    finally:
        release.set()
    job = wait(store, job_id, timeout=30)
    assert job.state == "done" and job.result == {"ok": True}
    assert [j.state for j in list_jobs(store, "train")] == ["done"]

    # free again: a new training starts (and fails at once: nothing to train on)
    new = start_training(store, admin, TrainConfig(**TRAIN_CONFIG))
    job = wait(store, new, timeout=60)
    assert job.state == "failed" and "import a labelled catalogue first" in job.error
    assert [a["action"] for a in store.query("SELECT action FROM audit WHERE action LIKE 'job.start.%' ORDER BY id")] == [
        "job.start.train", "job.start.suspects", "job.start.train"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def insert_job(store, kind: str, pid: int, heartbeat: str | None = None) -> int:
    from core.studio.store import utc_now

    with store.transaction() as db:
        return db["jobs"].insert({"kind": kind, "state": "running", "stage": "x", "progress": 0.3, "params": "{}",
                                  "user": "admin", "pid": pid, "created_at": utc_now(), "started_at": utc_now(),
                                  "heartbeat_at": heartbeat or utc_now()}).last_pk


def stored_state(store, job_id: int) -> str:
    """The state the job's row holds (reads show a dead worker's job failed before any write)."""
    return store.one("SELECT state FROM jobs WHERE id = ?", [job_id])["state"]


def test_a_job_whose_worker_died_is_reaped(job_store):
    from core.studio.jobs import get_job, latest_job, reap_dead_jobs, start_job

    store, admin = job_store
    gone = insert_job(store, "train", dead_pid())
    job = latest_job(store, "train")
    assert job.id == gone and job.state == "failed" and "worker stopped" in job.error
    assert stored_state(store, gone) == "running"  # reading wrote nothing
    assert reap_dead_jobs(store) == 1 and stored_state(store, gone) == "failed"
    assert get_job(store, gone).error == job.error

    # start_job reaps too: a phantom "running" job never blocks the next one
    phantom = insert_job(store, "train", dead_pid())
    new = start_job(store, admin, lambda c, p: {"ok": 1}, {}, kind="train", background=False)
    assert stored_state(store, phantom) == "failed"
    assert get_job(store, new).state == "done"

    # this very process, but no thread of it runs the job (a restart in the same pid)
    orphan = insert_job(store, "train", os.getpid())
    assert latest_job(store, "train").state == "failed"
    assert reap_dead_jobs(store, "train") == 1 and stored_state(store, orphan) == "failed"

    # another live process with a recent heartbeat (e.g. the CLI) is left alone; a stale
    # heartbeat means its worker hung or vanished
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        running = insert_job(store, "train", alive.pid)
        assert latest_job(store, "train").state == "running"
        assert reap_dead_jobs(store) == 0 and stored_state(store, running) == "running"
        with store.transaction() as db:
            db.execute("UPDATE jobs SET heartbeat_at = '2000-01-01T00:00:00.000+00:00' WHERE id = ?", [running])
        assert latest_job(store, "train").state == "failed"
        assert reap_dead_jobs(store) == 1 and stored_state(store, running) == "failed"
    finally:
        alive.kill()
        alive.wait()


def test_a_running_job_of_this_process_is_never_reaped(job_store):
    """A worker thread alive in this process is running, whatever its heartbeat says
    (embedding a large catalogue's photos reports no progress for a long time)."""
    from core.studio.jobs import get_job, latest_job, wait

    store, admin = job_store
    job_id, release = blocking_job(store, admin)
    try:
        with store.transaction() as db:
            db.execute("UPDATE jobs SET heartbeat_at = '2000-01-01T00:00:00.000+00:00' WHERE id = ?", [job_id])
        assert latest_job(store, "train").state == "running"
    finally:
        release.set()
    assert wait(store, job_id, timeout=30).state == "done"
    assert get_job(store, job_id).error is None


def test_a_job_is_not_reaped_between_its_insert_and_its_thread(job_store):
    """Another session reaping right after a job was recorded, before its worker thread
    is known, must not take it for dead."""
    import core.studio.jobs
    from core.studio.jobs import get_job, latest_job, reap_dead_jobs, start_job, wait

    store, admin = job_store
    real_thread = threading.Thread
    looked: list = []

    def thread_then_look(*args, **kwargs):
        # another page's start-up reaps while start_job is creating the worker
        observer = real_thread(target=lambda: looked.append((reap_dead_jobs(store), latest_job(store, "train"))))
        observer.start()
        observer.join(1.0)  # at most a moment: it waits for start_job's transaction
        return real_thread(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core.studio.jobs.threading, "Thread", thread_then_look)
        job_id = start_job(store, admin, lambda c, p: {"ok": 1}, {}, kind="train")
    job = wait(store, job_id, timeout=30)
    deadline = time.monotonic() + 10
    while not looked and time.monotonic() < deadline:
        time.sleep(0.05)
    reaped, seen = looked[0]
    assert reaped == 0 and seen.id == job_id
    assert seen.state in ("running", "done"), seen
    assert job.state == "done" and get_job(store, job_id).error is None


# --------------------------------------------------------------------------- 5. promote and rollback


@pytest.fixture(scope="module")
def candidate(loop, trained) -> dict:
    """A second real model, text-only (quick), trained on the same training data with
    the same cut-off as the first; registered, not live."""
    from core.common.settings import get_settings
    from core.studio.labels import as_catalogue, labelled_products
    from core.studio.registry import register_model
    from core.training.trainer import TrainConfig, Trainer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(loop.home))
        frame = labelled_products(loop.store, "train").assign(image_hash=None)
        classifier = Trainer(TrainConfig(weights=None, folds=2, text_epochs=2, seed=1), verbose=False).fit(
            as_catalogue(frame))
        classifier.metadata.trained_from = dict(trained["job"].result["trained_from"])
        path = classifier.save(get_settings().models_dir / classifier.version)
        version = register_model(loop.store, path, created_by="admin")
        return {"version": version, "path": path}


def scored_version(store, user) -> str:
    from core.models.classifier import Classifier
    from core.studio.registry import live_model
    from core.studio.scoring import score_product

    classifier = Classifier.load(live_model(store).path)
    scored = score_product(store, classifier, user, text="Acme watch dial with leather strap")
    row = store.one("SELECT model_version FROM predictions WHERE id = ?", [scored.prediction_id])
    assert row["model_version"] == scored.prediction.model_version == classifier.version
    return row["model_version"]


def test_promote_and_rollback_change_which_version_predicts(home_env, trained, candidate):
    from core.studio.compare import Comparison, promote
    from core.studio.registry import live_model

    store, admin = home_env.store, home_env.users["admin"]
    a, b = trained["job"].result["version"], candidate["version"]
    assert live_model(store).version == a and a != b
    assert scored_version(store, admin) == a

    promote(store, admin, b)
    assert live_model(store).version == b
    assert scored_version(store, admin) == b
    promote(store, admin, a)  # rollback
    assert live_model(store).version == a
    assert scored_version(store, admin) == a

    with pytest.raises(Exception, match="may not"):
        promote(store, home_env.users["rev1"], b)
    with pytest.raises(InputError, match="no model version"):
        promote(store, admin, "v-nope")

    per_class = {"Kitchen": 0.9, "Toys": 0.9, "Watches": 0.9}
    worse = Comparison(a, b, 10, {"macro_f1": 0.9, "per_class_f1": per_class},
                       {"macro_f1": 0.85, "per_class_f1": {**per_class, "Toys": 0.75}}, tolerance=0.01)
    assert worse.worse and worse.delta_macro_f1 == -0.05
    with pytest.raises(InputError, match="worse than the live model"):
        promote(store, admin, b, comparison=worse)
    assert live_model(store).version == a
    promote(store, admin, b, comparison=worse, confirm_worse=True)
    assert live_model(store).version == b

    within = Comparison(b, a, 10, {"macro_f1": 0.9, "per_class_f1": per_class},
                        {"macro_f1": 0.895, "per_class_f1": per_class}, tolerance=0.01)
    assert not within.worse
    promote(store, admin, a, comparison=within)
    assert live_model(store).version == a

    promotions = [json.loads(r["detail"]) for r in
                  store.query("SELECT detail FROM audit WHERE action = 'model.promote' ORDER BY id")]
    assert [(p["version"], p["previous"]) for p in promotions] == [(b, a), (a, b), (b, a), (a, b)]
    assert [p["confirmed_worse"] for p in promotions] == [False, False, True, False]
    assert promotions[2]["delta_macro_f1"] == -0.05
    activations = store.query("SELECT user, detail FROM audit WHERE action = 'model.activate' ORDER BY id")
    assert len(activations) == 4 and {r["user"] for r in activations} == {"admin"}


def test_compare_real_models_on_the_held_out_products(home_env, trained, candidate):
    from core.models.classifier import Classifier
    from core.studio.compare import compare, comparison_frame
    from core.studio.review_queue import record_review

    store = home_env.store
    live, cand = Classifier.load(trained["job"].result["path"]), Classifier.load(candidate["path"])
    eval_ids = {p["id"] for p in catalogue_products(store, "eval")}
    cutoff = trained["job"].result["trained_from"]["last_review_id"]

    # reviewed before the cut-off: trained on, so not held out
    frame = comparison_frame(store, live.metadata, cand.metadata)
    assert set(frame["id"]) == eval_ids
    # a decision after both models' cut-off is held out from both
    fresh = catalogue_products(store, "train")[5]
    review_id = record_review(store, home_env.users["rev1"], fresh["id"], "accept")
    assert review_id > cutoff
    frame = comparison_frame(store, live.metadata, cand.metadata)
    assert set(frame["id"]) == eval_ids | {fresh["id"]}
    # a model trained outside the store (no cut-off known) compares on the frozen slice only
    outside = replace(cand.metadata, trained_from=None)
    assert set(comparison_frame(store, live.metadata, outside)["id"]) == eval_ids

    comparison = compare(store, live, cand)
    assert (comparison.live_version, comparison.candidate_version) == (live.version, cand.version)
    assert comparison.rows == len(eval_ids) + 1
    assert comparison.live["n"] == comparison.candidate["n"] == comparison.rows
    assert comparison.delta_macro_f1 == round(comparison.candidate["macro_f1"] - comparison.live["macro_f1"], 6)
    assert comparison.worse == (comparison.delta_macro_f1 < -comparison.tolerance)
    table = comparison.per_class()
    assert table["class"].tolist() == sorted(set(comparison.live["per_class_f1"]) |
                                             set(comparison.candidate["per_class_f1"]))
    for _, row in table.iterrows():
        assert row["live"] == comparison.live["per_class_f1"][row["class"]]
        assert row["candidate"] == comparison.candidate["per_class_f1"][row["class"]]
        assert row["delta"] == pytest.approx(row["candidate"] - row["live"], abs=1e-6)
    assert comparison.live["macro_f1"] == pytest.approx(table["live"].mean(), abs=1e-5)
    # the same model against itself: no difference anywhere
    same = compare(store, live, live)
    assert same.delta_macro_f1 == 0 and not same.worse and (same.per_class()["delta"] == 0).all()


def test_compare_counts_a_product_a_model_cannot_predict(home_env, trained, candidate):
    """A photo-only held-out product, which the text-only candidate cannot predict: it
    counts against the candidate instead of breaking the comparison."""
    from core.models.classifier import Classifier
    from core.studio.compare import compare

    store = home_env.store
    photo = catalogue_products(store, "train")[6]
    with store.transaction() as db:
        pid = db["products"].insert({"text": "", "image_hash": photo["image_hash"], "source": "catalogue:photos",
                                     "true_label": photo["true_label"], "split": "eval"}).last_pk
    try:
        live, cand = Classifier.load(trained["job"].result["path"]), Classifier.load(candidate["path"])
        comparison = compare(store, live, cand)
        eval_rows = len(catalogue_products(store, "eval"))
        assert comparison.live["n"] == comparison.candidate["n"] == comparison.rows >= eval_rows
        matrix = comparison.candidate["confusion_matrix"]
        assert "(none)" in matrix["labels"] and sum(map(sum, matrix["matrix"])) == comparison.rows
        none = matrix["labels"].index("(none)")
        assert sum(row[none] for row in matrix["matrix"]) == 1  # the photo-only product
        # counted as a miss of its class, not as a class of its own in the macro-F1
        assert "(none)" not in comparison.candidate["per_class_f1"]
        assert set(comparison.candidate["per_class_f1"]) == set(comparison.live["per_class_f1"])
        assert "(none)" not in comparison.live["confusion_matrix"]["labels"]
    finally:
        with store.transaction() as db:
            db.execute("DELETE FROM products WHERE id = ?", [pid])


# --------------------------------------------------------------------------- 6. suspects


PLANTED = 6


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    """3 classes × 20 rows with photos; 2 rows of each class given another class's label."""
    root = tmp_path_factory.mktemp("suspects")
    cat = write_catalogue(root, n_per_class=20, seed=21)
    rows = [dict(r) for r in cat.rows]
    classes = ["Kitchen", "Toys", "Watches"]
    bad: list[int] = []
    for k, c in enumerate(classes):
        mine = [i for i, label in enumerate(cat.labels) if label == c][:2]
        for i in mine:
            rows[i]["category"] = classes[(k + 1) % 3]
        bad += [i + 1 for i in mine]  # 1-based CSV data rows
    assert len(set(bad)) == PLANTED
    write_rows(cat.csv_path, rows)
    return {"cat": cat, "rows": rows, "bad": sorted(bad), "root": root}


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory) -> Path:
    """A home whose database holds an imported text-only catalogue and one correction."""
    from core.studio.labels import import_catalogue
    from core.studio.review_queue import record_review

    root = tmp_path_factory.mktemp("cli_store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(root / "home"))
        cheap_hashes(mp)
        cat = write_catalogue(root / "cat", n_per_class=12, with_images=False, seed=8)
        store = Store()
        users = make_users(store, ("rev1", "reviewer"))
        import_catalogue(store, users["admin"], load_catalogue(cat.csv_path, **cat.load_kwargs), "cli")
        first = catalogue_products(store, "train")[0]
        record_review(store, users["rev1"], first["id"], "correct",
                      new_label=next(c for c in cat.classes if c != first["true_label"]))
    return root / "home"


BAD_TRAIN_FLAGS = {"from_store_with_data": (["--from-store", "--data", "x.csv"], "leave out --data"),
                   "no_data": ([], "train needs --data")}


@pytest.fixture(scope="module")
def cli_runs(planted, cli_home, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every CLI run of this module, two at a time (each pays TensorFlow's import)."""
    cat, root = planted["cat"], planted["root"]
    scratch = tmp_path_factory.mktemp("import_check")
    env = {**os.environ, "STUDIO_HOME": str(scratch)}
    for var in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL", "KERAS_HOME"):
        env.pop(var, None)
    script = "import core.studio.retrain; from keras.src.backend import config; print(config.keras_home())"
    runs = {
        "suspects": lambda: run_cli(
            root / "home", "suspects", "--data", cat.csv_path, "--text-cols", "title,description", "--label-col",
            "category", "--image-col", "image", "--image-dir", cat.image_dir, "--no-pretrained",
            "--out", root / "suspects.csv"),
        "from_store": lambda: run_cli(cli_home, "train", "--from-store", "--no-pretrained", "--folds", "2",
                                      "--epochs", "4", "--quiet"),
        "import_check": lambda: subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                                               env=env, capture_output=True, text=True, timeout=120),
        "suspects_bad": lambda: run_cli(root / "home", "suspects", "--data", cat.csv_path, "--text-cols", "title",
                                        "--label-col", "label", "--out", root / "never.csv", "--no-pretrained",
                                        "--quiet"),
        "seeds": lambda: run_cli(
            root / "home", "train", "--data", cat.csv_path, "--text-cols", "title,description", "--label-col",
            "category", "--no-pretrained", "--folds", "2", "--epochs", "4", "--seeds", "2", "--quiet",
            "--out", root / "seeded"),
        **{name: (lambda args=args: run_cli(cli_home, "train", *args, "--quiet"))
           for name, (args, _) in BAD_TRAIN_FLAGS.items()},
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run) for name, run in runs.items()}
        results = {name: future.result() for name, future in futures.items()}
    return {**results, "keras_home": scratch / "data" / "keras"}


def test_suspects_cli_ranks_the_planted_label_errors_first(planted, cli_runs):
    cat, root = planted["cat"], planted["root"]
    out = root / "suspects.csv"
    proc = cli_runs["suspects"]
    assert proc.returncode == 0, proc.stderr
    assert "suspected mislabels" in proc.stderr
    frame = pd.read_csv(out, keep_default_na=False)
    assert len(frame) == len(planted["rows"]) == 60
    assert list(frame.columns)[:4] == ["title", "description", "category", "image"]
    assert {"suspect_score", "suggested_label", "suspected", "row"} <= set(frame.columns)
    assert sorted(frame["row"]) == list(range(1, 61))
    for _, r in frame.iterrows():  # every input row, unchanged
        assert r["title"] == planted["rows"][r["row"] - 1]["title"]
        assert r["category"] == planted["rows"][r["row"] - 1]["category"]
    scores = frame["suspect_score"].astype(float).to_numpy()
    assert (np.diff(scores) <= 0).all() and ((0 <= scores) & (scores <= 1)).all()
    top = frame["row"].head(PLANTED).tolist()
    assert len(set(top) & set(planted["bad"])) >= 5, (top, planted["bad"])
    # the suggestion for a planted row is its real class
    truth = {i + 1: label for i, label in enumerate(cat.labels)}
    hits = frame[frame["row"].isin(planted["bad"])]
    assert (hits["suggested_label"] == hits["row"].map(truth)).sum() >= 5
    flagged = frame[frame["suspected"].astype(str) == "True"]["row"]
    assert len(set(flagged) & set(planted["bad"])) >= 5 and len(flagged) <= 12


def test_suspects_cli_bad_input_is_one_line(planted, cli_runs):
    root = planted["root"]
    proc = cli_runs["suspects_bad"]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == stderr_lines(proc) and len(stderr_lines(proc)) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and "'label'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (root / "never.csv").exists() and proc.stdout == ""


def test_suspects_job_feeds_its_review_queue(home_env, trained):
    from core.studio.jobs import get_job
    from core.studio.label_check import start_suspects_job
    from core.studio.labels import labelled_products
    from core.studio.review_queue import SUSPECTS, claim_next, pending_count, record_review

    store, rev1, admin = home_env.store, home_env.users["rev1"], home_env.users["admin"]
    job_id = start_suspects_job(store, admin, background=False, weights=None)
    job = get_job(store, job_id)
    assert job.state == "done"
    n = len(catalogue_products(store))
    assert job.result["scored"] == n == count(store, "suspects")
    rows = store.query("SELECT * FROM suspects ORDER BY score DESC, product_id")
    assert {r["job_id"] for r in rows} == {job_id}
    flagged = [r for r in rows if r["flagged"]]
    assert job.result["flagged"] == len(flagged) >= 1
    # the given label is the effective one: a reviewer's correction, not the catalogue's
    corrected, to_label = trained["corrected"]
    assert store.one("SELECT given_label FROM suspects WHERE product_id = ?", [corrected["id"]])["given_label"] == to_label

    assert pending_count(store, rev1, SUSPECTS) == pending_count(store, order=SUSPECTS) == len(flagged)
    item = claim_next(store, rev1, SUSPECTS)
    top = flagged[0]
    assert item.product_id == top["product_id"] and item.prediction_id is None
    assert item.extra["suspect_score"] == top["score"] and item.label == top["given_label"]
    assert item.extra["suggested_label"] == top["suggested_label"]
    # each model's own opinion comes along, so a reviewer sees where text and photo disagree
    assert all(r["text_label"] in item.labels for r in rows)
    assert (item.text_label, item.image_label) == (top["text_label"], top["image_label"])
    assert item.disagree == bool(top["text_label"] and top["image_label"] and top["text_label"] != top["image_label"])
    # a second reviewer gets the next one, not the claimed one
    other = claim_next(store, home_env.users["rev2"], SUSPECTS)
    assert other is None or other.product_id != item.product_id

    new_label = top["suggested_label"] if top["suggested_label"] != top["given_label"] else \
        next(c for c in item.labels if c != top["given_label"])
    review_id = record_review(store, rev1, item.product_id, "correct", new_label=new_label)
    review = store.one("SELECT * FROM reviews WHERE id = ?", [review_id])
    assert (review["old_label"], review["new_label"], review["prediction_id"]) == (top["given_label"], new_label, None)
    assert pending_count(store, order=SUSPECTS) == len(flagged) - 1
    nxt = claim_next(store, rev1, SUSPECTS)
    assert nxt is None or nxt.product_id != item.product_id
    assert labelled_products(store).set_index("id").loc[item.product_id, "label"] == new_label


# --------------------------------------------------------------------------- 7. CLI train --from-store


def test_cli_train_from_store(cli_home, cli_runs):
    proc = cli_runs["from_store"]
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["registered"] is True
    assert summary["trained_from"]["reviewed"] == 1
    assert set(summary["eval_slice"]) == {"fused", "text", "image"}
    assert summary["eval_slice"]["fused"]["n"] >= 1 and summary["eval_slice"]["image"]["n"] == 0
    assert Path(summary["model"]) == cli_home / "models" / summary["version"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_HOME", str(cli_home))
        from core.studio.jobs import latest_job
        from core.studio.registry import live_model

        store = Store()
        assert live_model(store).version == summary["version"]  # the first model goes live
        job = latest_job(store, "train")
        assert job.state == "done" and job.user == "cli" and job.result["version"] == summary["version"]


@pytest.mark.parametrize("case", BAD_TRAIN_FLAGS)
def test_cli_train_from_store_bad_flags(cli_runs, case):
    proc, message = cli_runs[case], BAD_TRAIN_FLAGS[case][1]
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == stderr_lines(proc) and len(stderr_lines(proc)) == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "--from-store" in proc.stderr
    assert proc.stdout == ""


def test_importing_the_training_job_first_sets_up_tensorflow_quietly(cli_runs):
    """The Models page imports core.studio.retrain first: Keras must still read KERAS_HOME under
    the runtime home (pretrained weights land there) and TensorFlow start quietly."""
    proc = cli_runs["import_check"]
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == cli_runs["keras_home"].resolve()
    assert proc.stderr == ""


def test_runs_are_logged_to_mlflow_when_a_tracking_uri_is_set(tmp_path, monkeypatch):
    from core.training.tracking import log_to_mlflow

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "metadata.json").write_text('{"version": "v7"}')
    metrics = {"validation": {"fused": {"accuracy": 0.9, "macro_f1": 0.85}, "text": {"accuracy": 0.8, "macro_f1": None}}}
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert log_to_mlflow("v7", {"folds": 3}, metrics, bundle) is None  # not asked: nothing logged

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert log_to_mlflow("v7", {"folds": 3, "weights": None}, metrics, bundle) == f"logged to MLflow at {uri}"
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True)
    assert runs["tags.mlflow.runName"].tolist() == ["v7"]
    assert runs["params.folds"].tolist() == ["3"] and "params.weights" not in runs
    assert runs["metrics.fused_macro_f1"].tolist() == [0.85] and runs["metrics.text_accuracy"].tolist() == [0.8]
    artifacts = Path(mlflow.get_run(runs["run_id"][0]).info.artifact_uri.removeprefix("file://"))
    assert (artifacts / "bundle" / "metadata.json").read_text() == '{"version": "v7"}'


def test_an_unreachable_mlflow_server_is_a_note_not_a_failed_training(tmp_path, monkeypatch):
    from core.training.tracking import log_to_mlflow

    (tmp_path / "metadata.json").write_text("{}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    note = log_to_mlflow("v8", {"folds": 3}, {}, tmp_path)
    assert note.startswith("not logged to MLflow at http://127.0.0.1:9: ")


def test_train_with_several_seeds_reports_mean_and_std(planted, cli_runs):
    from core.models.bundle import read_metadata

    proc = cli_runs["seeds"]
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["seeds"]["seeds"] == [0, 1]
    for metric in ("accuracy", "macro_f1"):
        stats = summary["seeds"]["text"][metric]
        assert stats["n"] == 2 and 0 <= stats["mean"] <= 1 and 0 <= stats["std"] <= 0.5
        first = summary["validation"]["text"][metric]
        # the mean of two runs lies within one std of the first run's value
        assert abs(first - stats["mean"]) <= stats["std"] + 1e-6
    assert "image" not in summary["seeds"]  # text-only catalogue: no image metrics to average
    saved = read_metadata(planted["root"] / "seeded")  # the first seed's bundle is the one saved
    assert saved.version == summary["version"] and saved.config["seed"] == 0
