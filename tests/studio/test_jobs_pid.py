"""A job's worker is one process: its pid *and* its start time. After a restart the pid
of a dead worker can belong to another process; that job must not block training."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers.studio import make_users

from core.studio.jobs import JobBusy, get_job, process_start, start_job
from core.studio.store import to_json, utc_now


@pytest.fixture
def stranger():
    """Another live process (not ours, not a worker): what a reused pid points at."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def running_job(store, pid: int, pid_started: str | None) -> int:
    """A train job row as a worker writes it, heartbeat fresh."""
    with store.transaction() as db:
        return db["jobs"].insert({
            "kind": "train", "state": "running", "stage": "text model", "progress": 0.4, "params": to_json({}),
            "user": "admin", "pid": pid, "pid_started": pid_started, "created_at": utc_now(),
            "started_at": utc_now(), "heartbeat_at": utc_now()}).last_pk


def test_process_start_names_one_process(stranger):
    mine, theirs = process_start(os.getpid()), process_start(stranger.pid)
    assert mine and theirs and mine == process_start(os.getpid())
    assert process_start(None) is None and process_start(2 ** 22 + 12345) is None  # beyond pid_max: no process


def test_a_job_whose_pid_was_reused_does_not_block_training(store, stranger):
    """Before: the pid answers kill(pid, 0) and the heartbeat is fresh, so the dead job
    looked alive and every training was refused as busy."""
    admin = make_users(store)["admin"]
    reused = running_job(store, stranger.pid, pid_started="1")  # the worker started at another time
    new = start_job(store, admin, lambda c, p: {"ok": 1}, {}, kind="train", background=False)
    assert get_job(store, new).state == "done"
    dead = get_job(store, reused)
    assert dead.state == "failed" and "stopped before finishing" in dead.error


def test_a_live_worker_with_its_own_start_time_still_blocks(store, stranger):
    admin = make_users(store)["admin"]
    running_job(store, stranger.pid, pid_started=process_start(stranger.pid))
    with pytest.raises(JobBusy, match="still running"):
        start_job(store, admin, lambda c, p: {}, {}, kind="train", background=False)


def test_start_job_records_the_worker_start_time(store):
    admin = make_users(store)["admin"]
    job_id = start_job(store, admin, lambda c, p: {}, {}, kind="suspects", background=False)
    assert get_job(store, job_id).pid_started == process_start(os.getpid())
