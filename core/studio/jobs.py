"""Long work (training) outside the Streamlit script: a worker *process* (or, for plain
callables, a thread) whose state and progress live in the `jobs` table, so any page,
another browser or a reload shows it.

Training runs in its own process, not a server thread: Streamlit calls
`keras.backend.clear_session()` after every script run (every progress poll), which
resets Keras' layer naming in all threads of the server and broke models being built
on a training thread ("The name 'dropout' is used 2 times"). A process also keeps the
UI responsive (no shared GIL) and survives a browser closing.

A job starts with the function it runs, `work(context, params)`; this module knows no
job kinds by name. For a worker process, the function's import path ("module:qualname",
taken from the function itself) is recorded in the job's row and the worker imports it
from there, so only module-level functions can run in a process.

One job of a kind at a time: the check and the insert share one write transaction. A
job whose process died (server restart) is *shown* failed by every read, from its pid
and heartbeat, and *marked* failed by the next write that looks (starting a job, or
`reap_dead_jobs` at the app's start-up), so a crash never leaves a phantom "running"
job blocking the next. Reads never write: the Models page polls every 2 seconds and
must not queue behind (or block) a write transaction.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, fields
from typing import Any, Callable

from core.common.errors import InputError, one_line
from core.common.settings import REPO_ROOT, get_settings, strip_credentials
from core.studio.auth import User, require_current
from core.studio.store import Store, from_json, sql_list, to_json, utc_now

ACTIVE = ("queued", "running")
_ACTIVE_SQL = f"state IN {sql_list(ACTIVE)}"
STALE_SECONDS = 15 * 60  # no heartbeat for this long: the worker is gone


class JobBusy(InputError):
    """Another job of the same kind is running."""


@dataclass(frozen=True)
class Job:
    """A row of the `jobs` table as a read shows it (a job whose worker is gone reads as
    failed), params and result decoded: callers name fields, not dict keys, so a renamed
    column fails at the attribute, not as a KeyError deep in a page."""
    id: int
    kind: str
    state: str
    stage: str | None
    progress: float | None
    message: str | None
    params: Any  # the decoded JSON the job started with
    result: Any  # the decoded JSON the work returned (or {"traceback": ...} on failure), None until it ends
    error: str | None
    user: str | None
    pid: int | None
    pid_started: str | None
    work: str | None  # "module:qualname" a worker process imports; None for a thread or inline job
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None

    @property
    def active(self) -> bool:
        """Queued or running (as it stands now)."""
        return self.state in ACTIVE


@dataclass
class JobContext:
    """Handed to the job's function: report progress, which also serves as a heartbeat."""
    store: Store
    job_id: int

    def progress(self, fraction: float, stage: str = "", message: str = "") -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE jobs SET progress = ?, stage = ?, message = ?, heartbeat_at = ? WHERE id = ?",
                       [round(max(0.0, min(1.0, float(fraction))), 4), stage, message, utc_now(), self.job_id])


def process_start(pid: int | None) -> str | None:
    """When process `pid` started, as an opaque stamp (Linux: field 22 of /proc/<pid>/stat,
    clock ticks since boot; else psutil's create_time when installed); None if unknown.
    A pid is reused once its process ends: only pid + start time name one process."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            # the command name (field 2) may hold spaces and parentheses: split after its last ")"
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()  # fields[0] is field 3, so field 22 is fields[19]
    except (OSError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}"
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess / AccessDenied: unknown
        return None


def _alive(pid: int | None, started: str | None = None) -> bool:
    """Is the worker process still running? With its recorded start time, a process
    that merely got the same pid since (after a restart) is not it."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is not None:
        now = process_start(pid)
        if now is not None and now != started:
            return False  # the pid was reused by another process
    return True


def _age_seconds(stamp: str | None) -> float:
    from datetime import datetime, timezone

    if not stamp:
        return float("inf")
    return (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds()


GONE = "the worker stopped before finishing (server restart or crash)"

_threads: dict[int, threading.Thread] = {}
_processes: dict[int, subprocess.Popen] = {}


def _workers_now() -> tuple[set[int], set[int]]:
    """(jobs with a thread of this process, jobs whose worker process started here has
    ended), taken *before* the rows are read: a worker that ends after this wrote its
    final state first, so a row read afterwards is never taken for dead while its worker
    was finishing. poll() also collects an ended process, so none lingers as a zombie."""
    return set(_threads), {job_id for job_id, proc in list(_processes.items()) if proc.poll() is not None}


def _worker_gone(row: dict, threads: set[int], ended: set[int]) -> bool:
    """Is the worker of this active job gone? Pure: reads /proc and this process's
    registries, writes nothing."""
    if row["id"] in _processes or row["id"] in ended:
        return row["id"] in ended  # a worker process that ended without saying so (killed)
    if row["pid"] == os.getpid():
        # ours: running exactly while its worker is registered, however long since its last
        # heartbeat (embedding many photos reports none); unregistered: this process runs it
        # no more (e.g. restarted in the same pid namespace). Registered before the rows
        # were read or now (a job started meanwhile): alive.
        return row["id"] not in threads and row["id"] not in _threads
    return not _alive(row["pid"], row["pid_started"]) or _age_seconds(row["heartbeat_at"]) > STALE_SECONDS


def _as_seen(row: dict, threads: set[int], ended: set[int]) -> dict:
    """The row as it stands now: an active job whose worker is gone reads as failed (the
    stored row says so once a write reaps it)."""
    if row["state"] in ACTIVE and _worker_gone(row, threads, ended):
        return {**row, "state": "failed", "error": GONE, "finished_at": row["heartbeat_at"] or row["started_at"]}
    return row


def _reap(db, kind: str | None = None) -> int:
    """Mark jobs whose worker is gone as failed, inside the caller's write transaction;
    returns how many."""
    threads, ended = _workers_now()
    sql = f"SELECT id, pid, pid_started, heartbeat_at FROM jobs WHERE {_ACTIVE_SQL}"
    gone = [row["id"] for row in db.execute(sql + (" AND kind = ?" if kind else ""), [kind] if kind else []).fetchall()
            if _worker_gone(dict(row), threads, ended)]
    for job_id in gone:
        db.execute("UPDATE jobs SET state = 'failed', error = ?, finished_at = ? WHERE id = ?",
                   [GONE, utc_now(), job_id])
    for job_id in ended:  # judged: forget them
        _processes.pop(job_id, None)
    return len(gone)


def reap_dead_jobs(store: Store, kind: str | None = None) -> int:
    """Record as failed the active jobs (of `kind`, or all) whose worker is gone; returns
    how many. The app calls it at start-up (a restart is what leaves them); start_job
    does the same in its own transaction."""
    with store.transaction() as db:
        return _reap(db, kind)


def work_path(work: Callable) -> str:
    """The import path of `work` ("module:qualname"), read from the function itself: what
    a worker process imports. InputError unless it is a Python function and importing
    that path gives back this very function (a lambda, a nested function, a function of
    __main__, a partial or a builtin is refused)."""
    module, qualname = getattr(work, "__module__", None), getattr(work, "__qualname__", None)
    if not inspect.isfunction(work) or not module or "<" in qualname or module == "__main__":
        raise InputError(f"{work!r} is not a module-level function: a worker process cannot import it")
    path = f"{module}:{qualname}"
    try:
        found = _import_work(path)
    except (ImportError, AttributeError):
        found = None
    if found is not work:
        raise InputError(f"{path} does not import back as {work!r}: a worker process cannot run it")
    return path


def _import_work(path: str) -> Callable[["JobContext", dict], dict]:
    module, _, qualname = path.partition(":")
    found = importlib.import_module(module)
    for name in qualname.split("."):
        found = getattr(found, name)
    return found


def _execute(store: Store, job_id: int, work: Callable, params: dict, *, reraise: bool) -> None:
    """Run `work` and record how it ended."""
    context = JobContext(store, job_id)
    try:
        result = work(context, params)
    except BaseException as exc:  # noqa: BLE001 - whatever happens, the job says so
        # what is stored is shown to users: no credentials from an environment URI in it
        error = strip_credentials(one_line(exc)) or type(exc).__name__
        detail = strip_credentials(traceback.format_exc(limit=8))
        with store.transaction() as db:
            db.execute("UPDATE jobs SET state = 'failed', error = ?, result = ?, finished_at = ? WHERE id = ?",
                       [error, to_json({"traceback": detail}), utc_now(), job_id])
        if reraise:
            raise
    else:
        with store.transaction() as db:
            db.execute("UPDATE jobs SET state = 'done', progress = 1.0, stage = 'done', result = ?, "
                       "finished_at = ? WHERE id = ?", [to_json(result), utc_now(), job_id])
    finally:
        _threads.pop(job_id, None)


def run_worker(job_id: int, store: Store | None = None) -> int:
    """Entry point of a worker process (`python -m core job-worker ID`): runs the function
    whose import path the job's row records."""
    store = store or Store()
    _threads[job_id] = threading.current_thread()  # before any look at the row: this process runs it
    job = _decode(store.one("SELECT * FROM jobs WHERE id = ?", [job_id]))
    if job is None or not job.work:
        _threads.pop(job_id, None)
        print(f"error: no job {job_id}" if job is None else f"error: job {job_id} records no function to run",
              file=sys.stderr)
        return 2
    try:
        work = _import_work(job.work)
    except (ImportError, AttributeError) as exc:
        work = _cannot_import(job.work, exc)  # recorded as the job's failure, not left running
    _execute(store, job_id, work, job.params, reraise=False)
    return 0 if get_job(store, job_id).state == "done" else 1


def _cannot_import(path: str, exc: BaseException) -> Callable:
    def fail(context, params):
        raise InputError(f"cannot import the job's function {path}: {one_line(exc)}")
    return fail


def start_job(store: Store, user: User, work: Callable[[JobContext, dict], dict], params: dict, *, kind: str,
              permission: str = "train", background: bool = True, process: bool = False) -> int:
    """Record a job of `kind` and run `work(context, params)`: in a worker process of its
    own when `process` (`work` must then be a module-level function, whose import path
    the row records; InputError otherwise), else on a thread; inline when `background`
    is False (the CLI). Raises JobBusy if one of this kind is active."""
    path = work_path(work) if process else None
    user = require_current(store, user, permission)
    with store.transaction() as db:
        _reap(db, kind)
        busy = db.execute(f"SELECT id, user, created_at FROM jobs WHERE kind = ? AND {_ACTIVE_SQL}",
                          [kind]).fetchone()
        if busy:
            raise JobBusy(f"a {kind} job (#{busy['id']}, started by {busy['user']} at {busy['created_at'][:19]}) "
                          "is still running; wait for it to finish")
        job_id = db["jobs"].insert({
            "kind": kind, "state": "running", "stage": "starting", "progress": 0.0, "params": to_json(params),
            "work": path, "user": user.username, "pid": os.getpid(), "pid_started": process_start(os.getpid()),
            "created_at": utc_now(), "started_at": utc_now(),
            "heartbeat_at": utc_now()}).last_pk
        store.audit(user.username, f"job.start.{kind}", {"job": job_id, **params}, db=db)
        # the worker is registered before the row is committed, so no other session's
        # look ever sees the job without it (and takes it for dead while it starts)
        if process and background:
            log = get_settings().data_dir / "runs" / f"job-{job_id}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "core", "job-worker", str(job_id)], cwd=REPO_ROOT,
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            _processes[job_id] = proc
            db.execute("UPDATE jobs SET pid = ?, pid_started = ? WHERE id = ?",
                       [proc.pid, process_start(proc.pid), job_id])
            return job_id
        worker = (threading.Thread(target=lambda: _execute(store, job_id, work, params, reraise=False),
                                   name=f"job-{kind}-{job_id}", daemon=True) if background
                  else threading.current_thread())
        _threads[job_id] = worker

    if background:
        worker.start()
    else:
        _execute(store, job_id, work, params, reraise=True)
    return job_id


_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _decode(row: dict | None) -> Job | None:
    """The row as a Job, its JSON columns decoded."""
    if row is None:
        return None
    return Job(**{**{name: row.get(name) for name in _JOB_FIELDS},
                  "params": from_json(row.get("params")), "result": from_json(row.get("result"))})


def _seen(store: Store, sql: str, params: list) -> list[Job]:
    """Rows of `sql` as they stand now (see _as_seen). A plain read: no lock, no write."""
    threads, ended = _workers_now()
    return [_decode(_as_seen(row, threads, ended)) for row in store.query(sql, params)]


def get_job(store: Store, job_id: int) -> Job | None:
    """The job as it stands now (a job whose worker is gone reads as failed)."""
    rows = _seen(store, "SELECT * FROM jobs WHERE id = ?", [job_id])
    return rows[0] if rows else None


def latest_job(store: Store, kind: str) -> Job | None:
    """The newest job of `kind`, as it stands now (the Models page polls it: it writes nothing)."""
    rows = _seen(store, "SELECT * FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1", [kind])
    return rows[0] if rows else None


def wait(store: Store, job_id: int, timeout: float = 600, poll: float = 0.2) -> Job:
    """Block until the job ends (tests, CLI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(store, job_id)
        if job and not job.active:
            return job
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still running after {timeout:.0f} s")


def list_jobs(store: Store, kind: str | None = None, limit: int = 20) -> list[Job]:
    """The newest jobs (of `kind`), as they stand now."""
    sql = "SELECT * FROM jobs" + (" WHERE kind = ?" if kind else "") + " ORDER BY id DESC LIMIT ?"
    return _seen(store, sql, [kind, limit] if kind else [limit])

