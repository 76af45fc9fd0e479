"""core.studio.jobs: a job starts with the function it runs (a worker process imports it
from the path its row records; the job runner knows no kinds), and reading jobs never
writes (the Models page polls every 2 seconds while other sessions write)."""

from __future__ import annotations

import dataclasses
import functools
import os
import sqlite3
import sys
import time

import pytest
from helpers.studio import make_users

from core.common.errors import InputError
from core.studio.jobs import Job, get_job, latest_job, list_jobs, reap_dead_jobs, run_worker, start_job, wait, work_path
from core.studio.store import to_json, utc_now


def echo_work(context, params: dict) -> dict:
    """A job's work at module level: importable by a worker process."""
    context.progress(0.5, "echo", "halfway")
    return {"echo": params, "pid": os.getpid()}


def stored(store, job_id: int) -> dict:
    """The job's row as stored, without the reads' view of dead workers."""
    return store.one("SELECT * FROM jobs WHERE id = ?", [job_id])


def dead_job(store, kind: str = "train", work: str | None = None) -> int:
    """A running job whose worker process is gone (its pid names no process)."""
    with store.transaction() as db:
        return db["jobs"].insert({
            "kind": kind, "state": "running", "stage": "x", "progress": 0.3, "params": to_json({}), "work": work,
            "user": "admin", "pid": 2 ** 22 + 12345, "created_at": utc_now(), "started_at": utc_now(),
            "heartbeat_at": utc_now()}).last_pk


def test_a_worker_process_runs_the_function_its_row_names(store, monkeypatch):
    admin = make_users(store)["admin"]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))  # the worker imports this test module
    job_id = start_job(store, admin, echo_work, {"n": 3}, kind="echo", process=True)
    assert stored(store, job_id)["work"] == f"{echo_work.__module__}:echo_work"
    job = wait(store, job_id, timeout=120)
    assert job.state == "done", job
    assert job.result["echo"] == {"n": 3} and job.result["pid"] not in (None, os.getpid())
    assert job.result["pid"] == job.pid  # the row names the worker process


def test_a_thread_or_inline_job_runs_any_callable(store):
    admin = make_users(store)["admin"]
    job_id = start_job(store, admin, lambda context, params: {"sum": params["a"] + 1}, {"a": 1}, kind="add",
                       background=False)
    job = get_job(store, job_id)
    assert job.state == "done" and job.result == {"sum": 2} and job.work is None
    assert isinstance(job, Job) and job.params == {"a": 1} and not job.active  # decoded, typed
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = "running"  # a read is a snapshot, never written back


def nested_owner():
    def nested(context, params):
        return {}
    return nested


def renamed(context, params):
    return {}


renamed.__qualname__ = "echo_work"  # claims to be another function


@pytest.mark.parametrize("work", [lambda c, p: {}, nested_owner(), functools.partial(echo_work), renamed, print],
                         ids=["lambda", "nested", "partial", "renamed", "builtin"])
def test_a_worker_process_refuses_what_it_cannot_import(store, work):
    admin = make_users(store)["admin"]
    with pytest.raises(InputError, match="cannot"):
        start_job(store, admin, work, {}, kind="echo", process=True)
    assert store.query("SELECT id FROM jobs") == []  # refused before anything was recorded


def test_work_path_names_the_function_itself():
    from core.studio.label_check import store_work
    from core.studio.retrain import train_work

    assert work_path(train_work) == "core.studio.retrain:train_work"
    assert work_path(store_work) == "core.studio.label_check:store_work"


def test_a_worker_whose_function_is_gone_fails_the_job(store):
    """A row naming a function that no longer imports (renamed since) fails, never stays running."""
    gone = dead_job(store, work="core.studio.retrain:no_such_work")
    assert run_worker(gone, store) == 1
    job = get_job(store, gone)
    assert job.state == "failed" and "cannot import the job's function core.studio.retrain:no_such_work" in job.error
    assert run_worker(dead_job(store, kind="other"), store) == 2  # a row with no function: refused
    assert run_worker(10_000, store) == 2


def test_reads_take_no_lock_and_write_nothing(store):
    """Before: latest_job took the write lock to reap, so each 2-second poll of the Models
    page waited behind (up to the 30 s busy timeout, then "database is locked") any
    write transaction, e.g. an import, and itself blocked writers."""
    gone = dead_job(store)
    other = sqlite3.connect(store.path)
    try:
        other.execute("BEGIN IMMEDIATE")  # another session writes meanwhile
        other.execute("UPDATE jobs SET message = 'busy elsewhere' WHERE id = ?", [gone])
        started = time.monotonic()
        seen = [latest_job(store, "train"), get_job(store, gone), list_jobs(store)[0], list_jobs(store, "train")[0]]
        assert time.monotonic() - started < 2
    finally:
        other.rollback()
        other.close()
    for job in seen:  # the worker is gone: shown failed, though the row was not written
        assert job.id == gone and job.state == "failed" and "worker stopped" in job.error
    assert stored(store, gone)["state"] == "running"

    assert reap_dead_jobs(store) == 1  # a write (start-up, start_job) records it
    row = stored(store, gone)
    assert row["state"] == "failed" and "worker stopped" in row["error"] and row["finished_at"]
    job = latest_job(store, "train")
    assert job.state == "failed" and job.error == row["error"] and job.finished_at == row["finished_at"]
    assert reap_dead_jobs(store) == 0
