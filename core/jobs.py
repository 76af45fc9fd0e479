"""Long work (training) outside the Streamlit script: a worker thread whose state and
progress live in the `jobs` table, so any page, another browser or a reload shows it.

One job of a kind at a time: the check and the insert share one write transaction. A
job whose process died (server restart) is marked failed on the next look, from its
pid and heartbeat, so a crash never leaves a phantom "running" job blocking the next.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from core.auth import User, require
from core.errors import InputError, one_line
from core.store import Store, from_json, to_json, utc_now

ACTIVE = ("queued", "running")
STALE_SECONDS = 15 * 60  # no heartbeat for this long: the worker is gone


class JobBusy(InputError):
    """Another job of the same kind is running."""


@dataclass
class JobContext:
    """Handed to the job's function: report progress, which also serves as a heartbeat."""
    store: Store
    job_id: int

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE jobs SET progress = ?, stage = ?, message = ?, heartbeat_at = ? WHERE id = ?",
                       [round(max(0.0, min(1.0, float(fraction))), 4), stage, message, utc_now(), self.job_id])


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age_seconds(stamp: str | None) -> float:
    from datetime import datetime, timezone

    if not stamp:
        return float("inf")
    return (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()


def _reap(db, kind: str | None = None) -> None:
    """Mark jobs whose worker is gone as failed."""
    sql = "SELECT id, pid, heartbeat_at FROM jobs WHERE state IN ('queued', 'running')"
    for row in db.execute(sql + (" AND kind = ?" if kind else ""), [kind] if kind else []).fetchall():
        gone = (row["pid"] != os.getpid() and not _alive(row["pid"])) or _age_seconds(row["heartbeat_at"]) > STALE_SECONDS
        if row["pid"] == os.getpid() and row["id"] not in _threads:
            gone = True  # this process runs it no more (e.g. restarted in the same pid namespace)
        if gone:
            db.execute("UPDATE jobs SET state = 'failed', error = ?, finished_at = ? WHERE id = ?",
                       ["the worker stopped before finishing (server restart or crash)", utc_now(), row["id"]])


_threads: dict[int, threading.Thread] = {}


def start_job(store: Store, user: User, kind: str, params: dict, work: Callable[[JobContext, dict], dict],
              *, permission: str = "train", background: bool = True) -> int:
    """Record a job and run `work(context, params)` on a worker thread (or inline when
    `background` is False: the CLI). Raises JobBusy if one of this kind is active."""
    require(user, permission)
    with store.transaction() as db:
        _reap(db, kind)
        busy = db.execute("SELECT id, user, created_at FROM jobs WHERE kind = ? AND state IN ('queued', 'running')",
                          [kind]).fetchone()
        if busy:
            raise JobBusy(f"a {kind} job (#{busy['id']}, started by {busy['user']} at {busy['created_at'][:19]}) "
                          "is still running; wait for it to finish")
        job_id = db["jobs"].insert({
            "kind": kind, "state": "running", "stage": "starting", "progress": 0.0, "params": to_json(params),
            "user": user.username, "pid": os.getpid(), "created_at": utc_now(), "started_at": utc_now(),
            "heartbeat_at": utc_now()}).last_pk
        store.audit(user.username, f"job.start.{kind}", {"job": job_id, **params}, db=db)

    def run() -> None:
        context = JobContext(store, job_id)
        try:
            result = work(context, params)
        except BaseException as exc:  # noqa: BLE001 - whatever happens, the job says so
            error = one_line(exc) or type(exc).__name__
            detail = traceback.format_exc(limit=8)
            with store.transaction() as db:
                db.execute("UPDATE jobs SET state = 'failed', error = ?, result = ?, finished_at = ? WHERE id = ?",
                           [error, to_json({"traceback": detail}), utc_now(), job_id])
            if not background:
                raise
        else:
            with store.transaction() as db:
                db.execute("UPDATE jobs SET state = 'done', progress = 1.0, stage = 'done', result = ?, "
                           "finished_at = ? WHERE id = ?", [to_json(result), utc_now(), job_id])
        finally:
            _threads.pop(job_id, None)

    if background:
        thread = threading.Thread(target=run, name=f"job-{kind}-{job_id}", daemon=True)
        _threads[job_id] = thread
        thread.start()
    else:
        _threads[job_id] = threading.current_thread()
        run()
    return job_id


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    return {**row, "params": from_json(row["params"]), "result": from_json(row["result"])}


def get_job(store: Store, job_id: int) -> dict | None:
    return _decode(store.one("SELECT * FROM jobs WHERE id = ?", [job_id]))


def latest_job(store: Store, kind: str) -> dict | None:
    """The newest job of `kind` (dead workers marked failed first)."""
    with store.transaction() as db:
        _reap(db, kind)
    return _decode(store.one("SELECT * FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1", [kind]))


def wait(store: Store, job_id: int, timeout: float = 600, poll: float = 0.2) -> dict:
    """Block until the job ends (tests, CLI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(store, job_id)
        if job and job["state"] not in ACTIVE:
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still running after {timeout:.0f} s")


def list_jobs(store: Store, kind: str | None = None, limit: int = 20) -> list[dict]:
    sql = "SELECT * FROM jobs" + (" WHERE kind = ?" if kind else "") + " ORDER BY id DESC LIMIT ?"
    return [_decode(r) for r in store.query(sql, [kind, limit] if kind else [limit])]

