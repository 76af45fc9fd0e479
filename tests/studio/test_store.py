"""core.studio.store: migrations, per-connection settings, all-or-nothing transactions, and
concurrent writers (threads and processes) on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.studio import LABELS, add_predicted_product, cheap_hashes, count, make_users

import core.studio.store
from core.common.settings import REPO_ROOT
from core.studio.store import MIGRATIONS, SCHEMA_VERSION, Store

TABLES = {"users", "images", "products", "predictions", "reviews", "models", "claims", "audit", "jobs", "suspects",
          "bulk_actions", "sessions", "login_attempts", "api_tokens"}


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not r[0].startswith("sqlite_")}
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def forget_migrated(path: Path) -> None:
    """Make the next Store(path) in this process run migrate() for real (as a new process would)."""
    core.studio.store._migrated.discard(Path(path).resolve())


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "studio.db")


# --------------------------------------------------------------------------- migrations


def test_migrations_from_empty_reach_the_schema_version(tmp_path):
    path = tmp_path / "deep" / "studio.db"
    store = Store(path)
    assert path.is_file()
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS) == user_version(path)
    assert tables(path) == TABLES
    columns = {r["name"] for r in store.query("PRAGMA table_info(predictions)")}
    assert {"product_id", "model_version", "labels", "fused", "text_probs", "image_probs", "label",
            "confidence", "margin", "disagree", "latency_ms", "user", "created_at"} <= columns


def test_default_path_is_under_the_studio_home(studio_home):
    store = Store()
    assert store.path == studio_home / "data" / core.studio.store.DB_NAME
    assert store.path.is_file() and store.schema_version() == SCHEMA_VERSION


def test_reopening_is_idempotent_and_keeps_the_data(tmp_path):
    path = tmp_path / "studio.db"
    store = Store(path)
    with store.transaction() as db:
        db["audit"].insert({"user": "u", "action": "kept", "created_at": core.studio.store.utc_now()})
    schema = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    for _ in range(3):
        forget_migrated(path)
        assert Store(path).migrate() == SCHEMA_VERSION
    assert user_version(path) == SCHEMA_VERSION
    assert sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema
    assert [r["action"] for r in Store(path).query("SELECT action FROM audit")] == ["kept"]


def test_an_older_database_is_brought_up_to_date(tmp_path):
    """A file left at version 1 (before the jobs table) gets only the missing migration."""
    import sqlite_utils

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db["audit"].insert({"user": "u", "action": "from v1", "created_at": "2024-01-01"})
    db.close()
    assert "jobs" not in tables(path)

    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert tables(path) == TABLES
    assert store.one("SELECT action FROM audit")["action"] == "from v1"


def test_a_failing_migration_leaves_the_version_unchanged(tmp_path, monkeypatch):
    def broken(db):
        db["half"].create({"id": int}, pk="id")
        raise RuntimeError("migration bug")

    path = tmp_path / "studio.db"
    Store(path)
    forget_migrated(path)
    monkeypatch.setattr(core.studio.store, "MIGRATIONS", MIGRATIONS + [broken])
    monkeypatch.setattr(core.studio.store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(path)
    assert user_version(path) == SCHEMA_VERSION
    assert "half" not in tables(path)


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize("mode", ["read", "transaction"])
def test_every_connection_has_wal_foreign_keys_and_a_busy_timeout(store, mode):
    for _ in range(2):  # a fresh connection each time, each configured
        with getattr(store, mode)() as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert db.execute("PRAGMA busy_timeout").fetchone()[0] == core.studio.store.BUSY_TIMEOUT_MS


def test_foreign_keys_are_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            db["predictions"].insert({"product_id": 12345, "model_version": "v", "labels": "[]",
                                      "fused": "[]", "label": "x"})
    assert count(store, "predictions") == 0


def test_connections_are_closed_after_each_operation(store):
    with store.read() as db:
        conn = db.conn
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    with store.transaction() as db:
        conn = db.conn
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


# --------------------------------------------------------------------------- transactions


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failing_transaction_leaves_nothing(store, exc):
    from core.studio.scoring import insert_product

    with pytest.raises(type(exc)):
        with store.transaction() as db:
            product_id = insert_product(db, "a kettle", None, "test", "u")
            db["predictions"].insert({"product_id": product_id, "model_version": "v", "labels": "[]",
                                      "fused": "[]", "label": "x"})
            store.audit("u", "something", {"k": 1}, db=db)
            assert db["products"].count == 1  # visible inside the transaction
            raise exc
    for table in ("products", "predictions", "audit"):
        assert count(store, table) == 0


def test_a_constraint_error_mid_transaction_rolls_back_the_earlier_writes(store):
    from core.studio.scoring import insert_product

    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as db:
            insert_product(db, "first", None, "test", "u")
            db["predictions"].insert({"product_id": 999, "model_version": "v", "labels": "[]", "fused": "[]",
                                      "label": "x"})
    assert count(store, "products") == 0
    # the file is not left locked: the next write goes through
    with store.transaction() as db:
        insert_product(db, "second", None, "test", "u")
    assert [r["text"] for r in store.query("SELECT text FROM products")] == ["second"]


def test_readers_do_not_wait_for_an_open_write_transaction(store):
    from core.studio.scoring import insert_product

    with store.transaction() as db:
        insert_product(db, "uncommitted", None, "test", "u")
        started = time.perf_counter()
        assert count(store, "products") == 0  # another connection: the old snapshot, at once
        assert time.perf_counter() - started < 2
    assert count(store, "products") == 1


def test_a_second_writer_waits_for_the_first_instead_of_failing(store):
    from core.studio.scoring import insert_product

    entered, done = threading.Event(), []

    def second():
        entered.wait(5)
        with store.transaction() as db:  # BEGIN IMMEDIATE blocks until the first commits
            done.append(db["products"].count)
            insert_product(db, "second", None, "test", "u")

    thread = threading.Thread(target=second)
    thread.start()
    with store.transaction() as db:
        insert_product(db, "first", None, "test", "u")
        entered.set()
        time.sleep(0.3)
    thread.join(10)
    assert done == [1]  # it saw the first writer's row: it waited, and did not fail
    assert count(store, "products") == 2


def test_audit_outside_and_inside_a_transaction(store):
    store.audit("alice", "standalone", {"a": 1})
    with store.transaction() as db:
        store.audit("bob", "inside", None, db=db)
    rows = store.query("SELECT user, action, detail FROM audit ORDER BY id")
    assert rows == [{"user": "alice", "action": "standalone", "detail": '{"a":1}'},
                    {"user": "bob", "action": "inside", "detail": None}]


def test_json_helpers_round_trip():
    assert core.studio.store.from_json(core.studio.store.to_json({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
    assert core.studio.store.to_json(None) is None and core.studio.store.from_json(None) is None
    assert core.studio.store.from_json("") is None


# --------------------------------------------------------------------------- concurrency


def test_concurrent_migrations_from_threads(tmp_path):
    path = tmp_path / "studio.db"
    barrier, errors, versions = threading.Barrier(8), [], []

    def open_it():
        try:
            barrier.wait(5)
            forget_migrated(path)
            versions.append(Store(path).schema_version())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert versions == [SCHEMA_VERSION] * 8
    assert tables(path) == TABLES


def test_concurrent_migrations_from_processes(tmp_path):
    """Several processes opening a brand new file at the same instant: each ends at the
    schema version, no 'database is locked' and no 'table already exists'."""
    path = tmp_path / "studio.db"
    code = (
        "import sys\n"
        "from core.studio.store import Store\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"  # all start together once every one has imported
        "print(Store(sys.argv[1]).schema_version(), flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert out.strip() == str(SCHEMA_VERSION)
    assert user_version(path) == SCHEMA_VERSION
    assert tables(path) == TABLES


def test_concurrent_reviews_from_eight_threads_are_all_recorded(tmp_path, monkeypatch):
    """8 reviewers × 50 decisions at the same time: exactly 400 review rows, none lost."""
    from core.studio.review_queue import record_review

    cheap_hashes(monkeypatch)
    store = Store(tmp_path / "studio.db")
    n_threads, per_thread = 8, 50
    users = make_users(store, *[(f"rev{i}", "reviewer") for i in range(n_threads)])
    products = [add_predicted_product(store, [0.5, 0.3, 0.2], text=f"product {i}")[0] for i in range(100)]

    barrier, errors = threading.Barrier(n_threads), []

    def work(i: int) -> None:
        user = users[f"rev{i}"]
        try:
            barrier.wait(10)
            for k in range(per_thread):
                product_id = products[(i * per_thread + k) % len(products)]
                decision = ("accept", "correct", "skip")[k % 3]
                record_review(store, user, product_id, decision,
                              new_label=LABELS[1] if decision == "correct" else None, note=f"{i}-{k}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert count(store, "reviews") == n_threads * per_thread
    per_reviewer = store.query("SELECT reviewer, COUNT(*) AS n, COUNT(DISTINCT note) AS notes "
                               "FROM reviews GROUP BY reviewer ORDER BY reviewer")
    assert per_reviewer == [{"reviewer": f"rev{i}", "n": per_thread, "notes": per_thread} for i in range(n_threads)]
    assert store.one("SELECT COUNT(DISTINCT id) AS n FROM reviews")["n"] == n_threads * per_thread


def test_v4_backfills_content_keys_and_the_settled_view_skips_undone_decisions(tmp_path):
    """A database of schema 3 (products without content keys) is brought to v4: every old
    product gets its content key, and `settled` takes the latest decision not undone."""
    from core.studio.store import content_key

    path = tmp_path / "old.db"
    db = core.studio.store.sqlite_utils.Database(sqlite3.connect(path))
    for migration in MIGRATIONS[:3]:
        migration(db)
    db.execute("PRAGMA user_version = 3")
    db["products"].insert({"id": 1, "text": "Red  Watch", "image_hash": None, "source": "x"})
    db["reviews"].insert({"id": 1, "product_id": 1, "reviewer": "a", "decision": "correct", "new_label": "A"})
    db["reviews"].insert({"id": 2, "product_id": 1, "reviewer": "b", "decision": "correct", "new_label": "B"})
    db.conn.commit()
    db.close()
    forget_migrated(path)
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.one("SELECT content_key FROM products")["content_key"] == content_key("red watch", None)
    assert store.one("SELECT new_label FROM settled WHERE product_id = 1")["new_label"] == "B"
    with store.transaction() as tx:
        tx.execute("UPDATE reviews SET revoked_at = 'now' WHERE id = 2")
    assert store.one("SELECT label, label_source FROM effective_labels WHERE product_id = 1") == {
        "label": "A", "label_source": "reviewer"}


def test_v9_turns_raw_tree_labels_into_paths_and_leaves_flat_labels_alone(tmp_path):
    """A schema-8 database holding Flipkart's raw tree strings (imported before trees were
    learned) next to flat labels: after v9 the trees are canonical paths, flat labels and
    the decisions on them are unchanged, and the effective label reads the path."""
    path = tmp_path / "old.db"
    db = core.studio.store.sqlite_utils.Database(sqlite3.connect(path))
    for migration in MIGRATIONS[:8]:
        migration(db)
    db.execute("PRAGMA user_version = 8")
    raw = '["Home Furnishing >>  Bed Linen >> Bedsheets"]'
    db["products"].insert_all([{"id": 1, "text": "sheet", "source": "x", "true_label": raw},
                               {"id": 2, "text": "watch", "source": "x", "true_label": "Watches"},
                               {"id": 3, "text": "mug", "source": "x", "true_label": raw}])
    db["reviews"].insert({"id": 1, "product_id": 2, "reviewer": "a", "decision": "correct",
                          "old_label": "Watches", "new_label": "Wearables >> Watches"})
    db["reviews"].insert({"id": 2, "product_id": 3, "reviewer": "a", "decision": "correct",
                          "old_label": raw, "new_label": "['Home >> Mugs']"})
    db.conn.commit()
    db.close()
    forget_migrated(path)
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION >= 9
    assert [r["true_label"] for r in store.query("SELECT true_label FROM products ORDER BY id")] == [
        "Home Furnishing >> Bed Linen >> Bedsheets", "Watches", "Home Furnishing >> Bed Linen >> Bedsheets"]
    assert [(r["old_label"], r["new_label"]) for r in store.query("SELECT * FROM reviews ORDER BY id")] == [
        ("Watches", "Wearables >> Watches"), ("Home Furnishing >> Bed Linen >> Bedsheets", "Home >> Mugs")]
    labels = {r["product_id"]: r["label"] for r in store.query("SELECT product_id, label FROM effective_labels")}
    assert labels == {1: "Home Furnishing >> Bed Linen >> Bedsheets", 2: "Wearables >> Watches", 3: "Home >> Mugs"}


def test_settled_decision_is_the_settled_views_row_for_one_product(store):
    """The per-product lookup review_queue uses (fast, through the product index) gives
    the same row as the `settled` view, whatever mix of decisions, skips, suggestions and
    undos a product has; and the view itself was built from SETTLING."""
    import random

    from core.studio.store import SETTLING_SQL, settled_decision

    rng = random.Random(3)
    with store.transaction() as db:
        db["products"].insert_all({"id": i, "text": f"p{i}"} for i in range(1, 41))
        db["reviews"].insert_all({
            "product_id": rng.randint(1, 40), "reviewer": rng.choice("abc"), "new_label": rng.choice(LABELS),
            "decision": rng.choice(["accept", "correct", "out_of_scope", "skip", "suggest"]),
            "revoked_at": "2026-01-01" if rng.random() < 0.3 else None} for _ in range(200))
    view = {r["product_id"]: r for r in store.query("SELECT * FROM settled")}
    assert 10 < len(view) < 40  # some products settled, some not
    with store.read() as db:
        for product_id in range(1, 41):
            row = settled_decision(db, product_id)
            assert (dict(row) if row is not None else None) == view.get(product_id), product_id
    sql = store.one("SELECT sql FROM sqlite_master WHERE name = 'settled'")["sql"]
    assert f"decision IN {SETTLING_SQL}" in sql
