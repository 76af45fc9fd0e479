"""The studio's SQLite database: one file under the runtime home, opened per operation.

Streamlit runs every session's script on its own thread, so no connection is shared:
each operation opens one (cheap), with WAL so readers never wait for a writer, a busy
timeout so two writers queue instead of failing, and foreign keys on (sqlite-utils leaves
them off). Writes go through `transaction()`, which takes the write lock up front
(BEGIN IMMEDIATE): a read-then-write never deadlocks on a lock upgrade, and either all of
an operation lands or none of it does.

The schema is built by numbered migrations recorded in PRAGMA user_version; a database
is brought up to date when a Store is opened, never by hand.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils

from core.common.settings import get_settings, private_dir, private_file
from core.common.text import identity_key

DB_NAME = "studio.db"
BUSY_TIMEOUT_MS = 30_000
ROLES = ("admin", "reviewer", "viewer")
# What a reviewer can decide. `accept`, `correct` and `out_of_scope` settle a product (the
# latest one not undone is its label; out_of_scope = no category fits, never trained on);
# `skip` puts it back at the end of that reviewer's queue; `suggest` is a viewer's feedback,
# shown to reviewers, never trained on.
SETTLING = ("accept", "correct", "out_of_scope")
DECISIONS = (*SETTLING, "skip")
SUGGEST = "suggest"
# The settling decisions that name a category (out_of_scope names none): what the Monitor
# counts as reviewed and what reviewers can disagree on.
LABELLING = ("accept", "correct")


def sql_list(values: tuple[str, ...]) -> str:
    """`('a', 'b')`: a tuple of constant names (decisions, job states) as SQL literals, for
    `… IN …` (constants only, never user input)."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


SETTLING_SQL = sql_list(SETTLING)
DECISIONS_SQL = sql_list(DECISIONS)
LABELLING_SQL = sql_list(LABELLING)


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds: sorts as text, readable in any SQLite browser."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def to_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def from_json(value: str | None) -> Any:
    return None if value in (None, "") else json.loads(value)


# --------------------------------------------------------------------------- migrations


def _v1_initial(db: sqlite_utils.Database) -> None:
    """Users, uploaded images (by content hash), products, predictions, reviews, model
    versions, review claims and the admin audit log."""
    db["users"].create({
        "id": int, "username": str, "password_hash": str, "role": str, "must_change_password": int,
        "disabled": int, "created_at": str, "created_by": str,
    }, pk="id", not_null={"username", "password_hash", "role"},
        defaults={"must_change_password": 0, "disabled": 0})
    db["users"].create_index(["username"], unique=True)

    db["images"].create({
        "hash": str, "path": str, "format": str, "width": int, "height": int, "bytes": int, "created_at": str,
    }, pk="hash", not_null={"path"})

    db["products"].create({
        "id": int, "text": str, "image_hash": str, "source": str, "source_ref": str, "true_label": str,
        "split": str, "created_at": str, "created_by": str,
    }, pk="id", foreign_keys=[("image_hash", "images", "hash")])
    db["products"].create_index(["source"])

    db["predictions"].create({
        "id": int, "product_id": int, "model_version": str, "labels": str, "fused": str, "text_probs": str,
        "image_probs": str, "label": str, "confidence": float, "margin": float, "text_label": str,
        "image_label": str, "disagree": int, "latency_ms": float, "user": str, "created_at": str,
    }, pk="id", not_null={"product_id", "model_version", "labels", "fused", "label"},
        foreign_keys=[("product_id", "products", "id")])
    db["predictions"].create_index(["product_id"])
    db["predictions"].create_index(["created_at"])

    db["reviews"].create({
        "id": int, "product_id": int, "prediction_id": int, "reviewer": str, "decision": str, "old_label": str,
        "new_label": str, "note": str, "model_version": str, "created_at": str,
    }, pk="id", not_null={"product_id", "reviewer", "decision"},
        foreign_keys=[("product_id", "products", "id"), ("prediction_id", "predictions", "id")])
    db["reviews"].create_index(["product_id"])

    db["models"].create({
        "version": str, "path": str, "name": str, "metrics": str, "metadata": str, "active": int,
        "created_by": str, "created_at": str, "activated_at": str,
    }, pk="version", not_null={"path"}, defaults={"active": 0})

    db["claims"].create({"product_id": int, "user": str, "expires_at": float}, pk="product_id",
                        not_null={"user", "expires_at"}, foreign_keys=[("product_id", "products", "id")])

    db["audit"].create({"id": int, "user": str, "action": str, "detail": str, "created_at": str}, pk="id",
                       not_null={"action"})
    db["audit"].create_index(["created_at"])


def _v2_jobs(db: sqlite_utils.Database) -> None:
    """Background work (training, batch scoring) with its progress, so any page or
    browser sees it and a second training cannot start beside the first."""
    db["jobs"].create({
        "id": int, "kind": str, "state": str, "stage": str, "progress": float, "message": str,
        "params": str, "result": str, "error": str, "user": str, "pid": int,
        "created_at": str, "started_at": str, "finished_at": str, "heartbeat_at": str,
    }, pk="id", not_null={"kind", "state"}, defaults={"progress": 0.0})
    db["jobs"].create_index(["kind", "state"])


def _v3_suspects(db: sqlite_utils.Database) -> None:
    """Suspected mislabels of the catalogue (confident learning), one row per product
    from the latest run, feeding the review queue of their own."""
    db["suspects"].create({
        "product_id": int, "score": float, "given_label": str, "suggested_label": str, "flagged": int,
        "labels": str, "probs": str, "job_id": int, "created_at": str,
    }, pk="product_id", not_null={"score", "given_label"}, foreign_keys=[("product_id", "products", "id")])
    db["suspects"].create_index(["flagged", "score"])


def content_key(text: str | None, image_hash: str | None) -> str:
    """A product's identity by content: its normalised text and its photo's hash. The same
    photo + description predicted twice, scored in two batches or imported twice is one product."""
    return hashlib.sha256(f"{identity_key(text or '')}\x00{image_hash or ''}".encode()).hexdigest()


# The one rule for "a settled decision": the latest decision not undone among accept /
# correct / out_of_scope. Every query that needs a product's settled decision or its label
# reads these views, or `settled_decision` for one product (`live_reviews`: every decision
# not undone; SETTLING_SQL where every settling decision counts, not only the latest).
# Created by migration v4: changing SETTLING needs a migration that recreates them
# (test_store checks they agree).
_VIEWS = f"""
CREATE VIEW live_reviews AS SELECT * FROM reviews WHERE revoked_at IS NULL;
CREATE VIEW settled AS
  SELECT r.* FROM reviews r
  JOIN (SELECT product_id, MAX(id) AS id FROM reviews
        WHERE revoked_at IS NULL AND decision IN {SETTLING_SQL}
        GROUP BY product_id) last ON last.id = r.id;
CREATE VIEW effective_labels AS
  SELECT p.id AS product_id,
         CASE WHEN s.decision = 'out_of_scope' THEN NULL ELSE COALESCE(s.new_label, p.true_label) END AS label,
         CASE WHEN s.decision = 'out_of_scope' THEN 'out_of_scope'
              WHEN s.id IS NOT NULL THEN 'reviewer'
              WHEN p.true_label IS NOT NULL THEN 'catalogue' END AS label_source,
         s.id AS review_id, s.reviewer, s.created_at AS reviewed_at, s.decision
  FROM products p LEFT JOIN settled s ON s.product_id = p.id;
"""


def settled_decision(db: sqlite_utils.Database, product_id: int) -> sqlite3.Row | None:
    """The product's row of the `settled` view (its settled decision), or None. Looked up
    through the reviews' product index: the view itself is built over every product before
    it is filtered (about 0.2 s at 200,000 reviews, against well under a millisecond)."""
    return db.execute(f"SELECT * FROM live_reviews WHERE product_id = ? AND decision IN {SETTLING_SQL} "
                      "ORDER BY id DESC LIMIT 1", [product_id]).fetchone()


def _v4_trustworthy_labels(db: sqlite_utils.Database) -> None:
    """Products identified by content (or an id column), decisions that can be undone,
    changed and bulk-applied with an audit trail, viewers' suggestions, and log-in sessions
    kept in a revocable cookie."""
    products = db["products"]
    products.add_column("content_key", str)
    products.add_column("external_id", str)
    products.add_column("updated_at", str)
    for row in db.execute("SELECT id, text, image_hash FROM products").fetchall():
        db.execute("UPDATE products SET content_key = ? WHERE id = ?", [content_key(row[1], row[2]), row[0]])
    products.create_index(["content_key"])
    products.create_index(["external_id"])

    reviews = db["reviews"]
    for column, kind in (("revoked_at", str), ("revoked_by", str), ("replaces", int), ("bulk_id", int),
                         ("shown_at", str)):
        reviews.add_column(column, kind)
    reviews.create_index(["reviewer", "id"])
    reviews.create_index(["decision"])

    db["bulk_actions"].create({
        "id": int, "user": str, "action": str, "filter": str, "threshold": float, "count": int,
        "created_at": str, "undone_at": str, "undone_by": str,
    }, pk="id", not_null={"user", "action"})

    db["sessions"].create({
        "id": str, "user_id": int, "created_at": float, "last_seen": float, "expires_at": float,
        "revoked_at": float, "user_agent": str,
    }, pk="id", not_null={"user_id", "created_at", "last_seen", "expires_at"},
        foreign_keys=[("user_id", "users", "id")])
    db["sessions"].create_index(["user_id"])
    for statement in _VIEWS.split(";"):  # executescript would commit the migration's transaction
        if statement.strip():
            db.execute(statement)


def _v5_suspect_opinions(db: sqlite_utils.Database) -> None:
    """Each model's own opinion of a suspected mislabel, shown to the reviewer when the
    description and the photo disagree."""
    db["suspects"].add_column("text_label", str)
    db["suspects"].add_column("image_label", str)


def _v6_login_attempts(db: sqlite_utils.Database) -> None:
    """Failed log-ins per account, so password guessing is slowed down (backoff) whichever
    server process or browser the guesses come from."""
    db["login_attempts"].create({
        "user_id": int, "failures": int, "last_failure_at": float, "locked_until": float,
    }, pk="user_id", not_null={"failures"}, defaults={"failures": 0},
        foreign_keys=[("user_id", "users", "id")])


def text_key(text: str | None) -> str:
    """A product's text alone, normalised as in `content_key`: the same description with
    another photo (or none) has the same key, so it can keep its evaluation-slice split."""
    return hashlib.sha256(identity_key(text or "").encode()).hexdigest()


def _v7_registry_and_jobs(db: sqlite_utils.Database) -> None:
    """Model versions whose bundle is gone are marked missing (never deleted); a job's
    worker is known by pid *and* process start time (a reused pid is not the worker);
    products carry the key of their text alone (for the evaluation slice's membership);
    the one-time admin password has an expiry."""
    db["models"].add_column("missing_at", str)
    db["jobs"].add_column("pid_started", str)
    db["users"].add_column("password_expires_at", str)
    db["products"].add_column("text_key", str)
    for row in db.execute("SELECT id, text FROM products").fetchall():
        db.execute("UPDATE products SET text_key = ? WHERE id = ?", [text_key(row[1]), row[0]])
    db["products"].create_index(["text_key", "split"])


def _v8_job_work(db: sqlite_utils.Database) -> None:
    """A job names the function its worker process runs ("module:qualname"), so the job
    runner knows no job kinds by name."""
    db["jobs"].add_column("work", str)


def _v9_category_paths(db: sqlite_utils.Database) -> None:
    """Labels are whole category paths in one canonical form ("A >> B >> C"): a tree label
    stored raw before trees were learned ('["A >> B >> C >> …"]', Flipkart's form) becomes
    that path, so retraining learns the tree; flat labels are left exactly as they were.
    A prediction keeps each level's confidence (a JSON list; NULL for flat models and
    older rows), which the review queue can order by."""
    from core.common.category_path import TREE_SEP, normalise_path

    db["predictions"].add_column("level_confidences", str)
    for table, columns in (("products", ("true_label",)), ("reviews", ("old_label", "new_label"))):
        for column in columns:
            rows = db.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} LIKE ?",
                              [f"%{TREE_SEP}%"]).fetchall()
            for (value,) in rows:
                canonical = normalise_path(value)
                if canonical and canonical != value:
                    db.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [canonical, value])


def _v10_api_tokens(db: sqlite_utils.Database) -> None:
    """API tokens for the HTTP API: only their SHA-256 is kept (a copy of the database
    gives no working token); revoked ones stay listed (who could call the API when)."""
    db["api_tokens"].create({
        "id": int, "user_id": int, "label": str, "token_hash": str, "prefix": str, "created_at": str,
        "created_by": str, "last_used_at": str, "revoked_at": str, "revoked_by": str,
    }, pk="id", not_null={"user_id", "token_hash"}, foreign_keys=[("user_id", "users", "id")])
    db["api_tokens"].create_index(["token_hash"], unique=True)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1_initial, _v2_jobs, _v3_suspects,
                                                              _v4_trustworthy_labels, _v5_suspect_opinions,
                                                              _v6_login_attempts, _v7_registry_and_jobs,
                                                              _v8_job_work, _v9_category_paths, _v10_api_tokens]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- the store


def _enable_wal(db: sqlite_utils.Database) -> None:
    """Switch the file to WAL (persistent, so once per file). The switch needs an exclusive
    lock and SQLite answers "database is locked" at once, without the busy handler, while
    another process holds any lock (e.g. it is switching or migrating the new file too):
    retry until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)

_migrated: set[Path] = set()
_migrate_lock = threading.Lock()


# What a failed database write raises (for callers that must not import sqlite3 themselves).
StoreWriteError = sqlite3.OperationalError


def out_of_space(exc: BaseException) -> bool:
    """A write refused for lack of space: ENOSPC, EFBIG (a file size limit), or SQLite's
    own words for the same (its writes fail as "disk I/O error" or "database or disk is full")."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return True
    return isinstance(exc, StoreWriteError) and any(
        words in str(exc) for words in ("disk I/O error", "database or disk is full"))


class Store:
    """The database at `path` (default: <home>/data/studio.db), migrated on first open."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else get_settings().data_dir / DB_NAME
        # the database holds password hashes and session ids: owner only (an existing
        # folder given explicitly, e.g. /tmp, is not changed)
        private_dir(self.path.parent, tighten=path is None)
        private_file(self.path)
        self.migrate()

    def _connect(self) -> sqlite_utils.Database:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        return sqlite_utils.Database(conn, execute_plugins=False)

    @contextmanager
    def read(self) -> Iterator[sqlite_utils.Database]:
        """A connection for reads, closed afterwards."""
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """All writes inside land together or not at all. sqlite-utils' own `atomic()`
        blocks inside become savepoints of this transaction."""
        db = self._connect()
        try:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                raise
            db.conn.execute("COMMIT")
        finally:
            db.close()

    def query(self, sql: str, params: dict | tuple = ()) -> list[dict]:
        with self.read() as db:
            return [dict(row) for row in db.query(sql, params)]

    def one(self, sql: str, params: dict | tuple = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def schema_version(self) -> int:
        with self.read() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> int:
        """Apply the migrations this file lacks, each in its own transaction; returns the
        schema version. Safe to call from several processes at once."""
        key = self.path.resolve()
        with _migrate_lock:
            if key in _migrated and self.path.exists():
                return SCHEMA_VERSION
            db = self._connect()
            try:
                _enable_wal(db)
                while True:
                    db.conn.execute("BEGIN IMMEDIATE")
                    version = db.execute("PRAGMA user_version").fetchone()[0]
                    if version >= SCHEMA_VERSION:
                        db.conn.execute("COMMIT")
                        break
                    try:
                        MIGRATIONS[version](db)
                        db.conn.execute(f"PRAGMA user_version = {version + 1}")
                    except BaseException:
                        db.conn.execute("ROLLBACK")
                        raise
                    db.conn.execute("COMMIT")
            finally:
                db.close()
            _migrated.add(key)
            return SCHEMA_VERSION

    # -- the audit log ------------------------------------------------------------------
    def audit(self, user: str | None, action: str, detail: dict | None = None,
              db: sqlite_utils.Database | None = None) -> None:
        """Record an admin action; inside `db`'s transaction when given, so the action and
        its record land together."""
        row = {"user": user, "action": action, "detail": to_json(detail), "created_at": utc_now()}
        if db is not None:
            db["audit"].insert(row)
            return
        with self.transaction() as tx:
            tx["audit"].insert(row)
