"""Fault injection (issue 10, "Reliability suite"): kill an import and a batch midway, fill
the disk during an import, and let eight reviewers decide the same items at once. Each test
ends by checking what a user could rely on: the database file is consistent (`PRAGMA
integrity_check`), a batch or import is all there or not there at all, every stored photo
is whole, and nothing that was confirmed is lost.

The kills and the file-size limit hit real child processes (`python -m core import`, and
tests/fault_scripts.py for a batch) on a real SQLite file; two admins promoting at once is
covered in tests/test_registry.py."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from fault_scripts import HALFWAY, score_upload
from helpers.catalogues import write_catalogue
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FAULT_SCRIPTS = Path(__file__).resolve().parent / "fault_scripts.py"


# --------------------------------------------------------------------------- helpers


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "STUDIO_HOME": str(home)}


def _import_cmd(cat) -> list[str]:
    return [sys.executable, "-m", "core", "import", "--data", str(cat.csv_path), "--text-cols", "title,description",
            "--label-col", "category", "--image-col", "image", "--image-dir", str(cat.image_dir), "--quiet"]


def _stored_photos(home: Path) -> list[Path]:
    """Finished photo files (temporary `.upload-*` files excluded)."""
    root = home / "data" / "images"
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")] if root.is_dir() else []


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll `predicate` until true (True) or the process ended first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.005)
    raise AssertionError("the child neither reached the kill point nor ended")


def _wait_for_halfway(proc: subprocess.Popen) -> tuple[bool, str]:
    """Read the child's stderr until it says HALFWAY (True) or ends (False, its stderr)."""
    seen = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace").strip()
        if line == HALFWAY:
            return True, ""
        seen.append(line)
    return False, "\n".join(seen[-20:])


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@contextmanager
def _db(home: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, as a fresh process after the crash would open it."""
    path = home / "data" / "studio.db"
    assert path.exists(), "no database file"
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def _assert_consistent(home: Path) -> None:
    """The database checks out, every `images` row has its file, and every stored photo
    file decodes completely (none half-written)."""
    with _db(home) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for row in conn.execute("SELECT hash, path FROM images"):
            assert (home / "data" / row["path"]).is_file(), f"photo {row['hash']} recorded but missing"
    for path in _stored_photos(home):
        with Image.open(path) as img:
            img.load()  # raises on a truncated file


def _count(home: Path, sql: str) -> int:
    with _db(home) as conn:
        return conn.execute(sql).fetchone()[0]


def _no_duplicate_products(home: Path) -> None:
    with _db(home) as conn:
        doubled = conn.execute("SELECT content_key, COUNT(*) FROM products GROUP BY content_key "
                               "HAVING COUNT(*) > 1").fetchall()
    assert doubled == [], f"{len(doubled)} products stored twice"


# --------------------------------------------------------------------------- 1. kill an import

IMPORT_ROWS = 3 * 100  # ~2.5 s for `python -m core import` on 2 cores


@pytest.fixture(scope="module")
def big_catalogue(tmp_path_factory: pytest.TempPathFactory):
    """300 labelled products with 400x300 photos (each distinct)."""
    return write_catalogue(tmp_path_factory.mktemp("big_catalogue"), n_per_class=IMPORT_ROWS // 3,
                           image_size=(400, 300), seed=11)


@pytest.mark.parametrize("kill_at", ["photos", "transaction"])
def test_import_killed_midway_is_all_or_nothing(big_catalogue, tmp_path: Path, kill_at: str) -> None:
    """SIGKILL `python -m core import` while it stores the photos (once 5 are stored), or
    inside its transaction with half the products written (tests/fault_scripts.py pauses
    it there): nothing half-imported, and a re-run completes with every product once."""
    home = tmp_path / "home"
    home.mkdir()
    if kill_at == "photos":
        cmd = _import_cmd(big_catalogue)
    else:
        cmd = [sys.executable, str(FAULT_SCRIPTS), "import", str(IMPORT_ROWS // 2), *_import_cmd(big_catalogue)[4:]]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**_env(home), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if kill_at == "photos":
            reached, err = _wait_for(lambda: len(_stored_photos(home)) >= 5, proc), ""
        else:
            reached, err = _wait_for_halfway(proc)
            # another process sees nothing of the open transaction
            assert _count(home, "SELECT COUNT(*) FROM products") == 0
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, rest = proc.communicate()
    assert reached, f"import ended before the kill point: rc={proc.returncode} {err}{rest.decode()[-800:]}"

    _assert_consistent(home)
    first = _count(home, "SELECT COUNT(*) FROM products")
    print(f"import killed after {len(_stored_photos(home))} photos: {first} products committed")
    assert first in (0, IMPORT_ROWS), f"half an import committed: {first} of {IMPORT_ROWS} products"
    assert kill_at == "photos" or first == 0, "a transaction killed before COMMIT was kept"
    if first == 0:  # the transaction never committed: no trace of it in the audit log either
        assert _count(home, "SELECT COUNT(*) FROM audit WHERE action = 'catalogue.import'") == 0

    rerun = subprocess.run(_import_cmd(big_catalogue), cwd=REPO, env=_env(home), capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    summary = json.loads(rerun.stdout)
    if first == 0:
        assert (summary["added"], summary["updated"], summary["unchanged"]) == (IMPORT_ROWS, 0, 0)
    else:
        assert (summary["added"], summary["updated"], summary["unchanged"]) == (0, 0, IMPORT_ROWS)
    assert _count(home, "SELECT COUNT(*) FROM products") == IMPORT_ROWS
    _no_duplicate_products(home)
    _assert_consistent(home)


# --------------------------------------------------------------------------- 2. kill a batch

BATCH_ROWS = 3 * 42  # two chunks of 64


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A batch CSV and its zip of photos (what the batch page receives)."""
    root = tmp_path_factory.mktemp("batch_files")
    cat = write_catalogue(root / "cat", n_per_class=BATCH_ROWS // 3, image_size=(96, 72), seed=5)
    zip_path = root / "photos.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for row in cat.rows:
            archive.write(cat.image_dir / row["image"], row["image"])
    return cat.csv_path, zip_path


@pytest.fixture
def batch_home(tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from helpers.app_home import build_app_home
    from helpers.studio import cheap_hashes

    cheap_hashes(monkeypatch)
    return build_app_home(tmp_path / "home", tiny_bundle).home


def _batch_proc(home: Path, files: tuple[Path, Path], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FAULT_SCRIPTS), "batch", str(files[0]), str(files[1]), *extra],
                            cwd=REPO, env={**_env(home), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("kill_at", ["transaction", pytest.param("scoring", marks=pytest.mark.slow)])
def test_batch_killed_midway_is_all_or_nothing(batch_home: Path, batch_files, monkeypatch: pytest.MonkeyPatch,
                                               kill_at: str) -> None:
    """SIGKILL a batch scoring inside its transaction, half its products and predictions
    written (tests/fault_scripts.py pauses it there), or (slow variant) while the model
    scores its first chunk: no product or prediction of the batch is left, the database
    checks out, and the same batch then scores completely, once."""
    home = batch_home
    products_before = _count(home, "SELECT COUNT(*) FROM products")
    proc = _batch_proc(home, batch_files, *([str(BATCH_ROWS // 2)] if kill_at == "transaction" else []))
    try:
        if kill_at == "transaction":
            reached, err = _wait_for_halfway(proc)
        else:
            reached, err = _wait_for(lambda: len(_stored_photos(home)) >= 10, proc, timeout=120), ""
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    out, rest = proc.communicate()
    assert reached, f"batch ended before the kill point: rc={proc.returncode} {err}{rest.decode()[-800:]}"

    _assert_consistent(home)
    batch_products = _count(home, "SELECT COUNT(*) FROM products WHERE source LIKE 'batch:%'")
    batch_predictions = _count(home, "SELECT COUNT(*) FROM predictions")
    assert (batch_products, batch_predictions) in ((0, 0), (BATCH_ROWS, BATCH_ROWS)), (
        f"half a batch committed: {batch_products} products, {batch_predictions} predictions")
    assert _count(home, "SELECT COUNT(*) FROM products") - products_before == batch_products
    assert kill_at == "scoring" or batch_products == 0, "a transaction killed before COMMIT was kept"
    print(f"batch killed after {len(_stored_photos(home))} photos: {batch_products} products committed")

    # the same batch again, in this process (TensorFlow is loaded already by tiny_bundle)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    result = score_upload(*batch_files)
    assert result["scored"] == BATCH_ROWS == result["ids"]
    assert result["new"] == (BATCH_ROWS if batch_products == 0 else 0)  # a committed batch is found again
    assert _count(home, "SELECT COUNT(*) FROM predictions") == batch_predictions + BATCH_ROWS
    assert _count(home, "SELECT COUNT(*) FROM products WHERE source LIKE 'batch:%'") == BATCH_ROWS
    _no_duplicate_products(home)
    _assert_consistent(home)


# --------------------------------------------------------------------------- 3. a full disk


def _limit_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def _prepared_home(tmp_path: Path) -> Path:
    """A home whose database already exists (schema written), as on a server in use."""
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run([sys.executable, "-c", "from core.studio.store import Store; Store()"], cwd=REPO, env=_env(home),
                   check=True, timeout=60)
    return home


#: WAL mode needs its 32 KB shared-memory file: a lower limit fails on opening the database
FSIZE_LIMIT = 48 * 1024


def _noise_png(path: Path, size: int = 200) -> None:
    """A photo that does not compress: over FSIZE_LIMIT once stored."""
    rng = random.Random(size)
    Image.frombytes("RGB", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size * 3))).save(path)


@pytest.mark.parametrize("where", ["opening", "photos", "database"])
def test_import_on_a_full_disk_fails_cleanly(tmp_path: Path, where: str) -> None:
    """RLIMIT_FSIZE makes writes fail with EFBIG: on opening the database (limit below
    SQLite's shared-memory file), while the photos are stored (the 20th photo is noise,
    larger than the limit), or while the products are written (every photo fits, the
    transaction's WAL does not). Each ends with one error line, no traceback, a consistent
    database, no partial import, and the import succeeds once the limit is gone."""
    cat = write_catalogue(tmp_path / "cat", n_per_class=40, image_size=(160, 120), seed=2)
    home = _prepared_home(tmp_path)
    db_file = home / "data" / "studio.db"
    limit = 1024 if where == "opening" else FSIZE_LIMIT
    if where == "photos":
        _noise_png(cat.image_dir / cat.rows[19]["image"])
    else:
        assert max((cat.image_dir / r["image"]).stat().st_size for r in cat.rows) * 4 < FSIZE_LIMIT

    proc = subprocess.run(_import_cmd(cat), cwd=REPO, env=_env(home), capture_output=True, timeout=120,
                          preexec_fn=_limit_file_size(limit))
    stderr = proc.stderr.decode()
    assert proc.returncode != 0, f"the import claimed success on a full disk: {proc.stdout.decode()[-500:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr[-3000:]
    assert "disk is full" in lines[0], lines[0]  # said as what it is, not as a bug
    assert proc.stdout.strip() == b""  # no summary printed for an import that did not happen
    assert db_file.exists()
    stored = _stored_photos(home)
    assert {"opening": len(stored) == 0, "photos": 10 <= len(stored) < 20,  # failed where meant to
            "database": len(stored) == len(cat.rows)}[where], f"{len(stored)} photos stored"
    leftovers = [p for p in (home / "data").rglob(".upload-*")]
    assert leftovers == [], f"half-written photo files left: {leftovers}"
    print(where, lines[0])

    _assert_consistent(home)
    assert _count(home, "SELECT COUNT(*) FROM products") == 0
    assert _count(home, "SELECT COUNT(*) FROM images") == 0

    again = subprocess.run(_import_cmd(cat), cwd=REPO, env=_env(home), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert json.loads(again.stdout)["added"] == len(cat.rows)
    _no_duplicate_products(home)
    _assert_consistent(home)


# --------------------------------------------------------------------------- 4. eight reviewers


def test_eight_reviewers_deciding_the_same_items(store) -> None:
    """Eight threads claim, decide (accept / correct / out of scope / skip) and sometimes
    hold a claim past its expiry, on the same 20 products. Only DecisionConflict may be
    raised; every decision that returned an id is in the database, no refused one is;
    each product's effective decision is the newest confirmed one."""
    from helpers.studio import LABELS, add_predicted_product, make_users

    from core.studio.review_queue import DecisionConflict, claim_next, record_review

    rng = random.Random(7)
    products = [add_predicted_product(store, rng.choice([[0.5, 0.3, 0.2], [0.2, 0.45, 0.35], [0.1, 0.3, 0.6]]),
                                      text=f"item {n}")[0] for n in range(20)]
    users = make_users(store, *[(f"rev{n}", "reviewer") for n in range(8)])
    reviewers = [users[f"rev{n}"] for n in range(8)]

    confirmed: list[tuple[int, int, str, str]] = []  # review id, product, reviewer, decision
    stale: list[tuple[int, int, int]] = []  # confirmed after the claim expired: review id, product, seen id
    refused: list[tuple[int, str, bool]] = []  # product, reviewer, whether the claim had expired
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(reviewers))

    def work(user, seed: int) -> None:
        local = random.Random(seed)
        try:
            start.wait()
            for _ in range(12):
                # a short claim now and then: the screen outlives it, others take the item
                short = local.random() < 0.3
                item = claim_next(store, user, ttl=0.01 if short else 30)
                if item is None:
                    return
                if short:
                    time.sleep(0.03)
                decision = local.choice(["accept", "accept", "correct", "out_of_scope", "skip"])
                new_label = local.choice(LABELS) if decision == "correct" else None
                try:
                    review_id = record_review(store, user, item.product_id, decision, new_label=new_label,
                                              prediction_id=item.prediction_id, seen_review_id=item.seen_review_id)
                except DecisionConflict:
                    with lock:
                        refused.append((item.product_id, user.username, short))
                    continue
                with lock:
                    confirmed.append((review_id, item.product_id, user.username, decision))
                    if short and decision != "skip":
                        stale.append((review_id, item.product_id, item.seen_review_id))
        except BaseException as exc:  # noqa: BLE001 - reported below with the thread's user
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(u, n)) for n, u in enumerate(reviewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a reviewer thread hung"
    assert errors == [], f"unexpected errors: {[f'{type(e).__name__}: {e}' for e in errors]}"
    assert confirmed, "no decision was made at all"

    rows = store.query("SELECT id, product_id, reviewer, decision FROM reviews ORDER BY id")
    assert sorted((r["id"], r["product_id"], r["reviewer"], r["decision"]) for r in rows) == sorted(confirmed), (
        "the reviews table differs from the decisions confirmed to reviewers")
    assert {r["product_id"] for r in rows} <= set(products)
    settling = defaultdict(list)
    for review_id, product_id, _, decision in sorted(confirmed):
        if decision != "skip":
            settling[product_id].append(review_id)
    for product_id, ids in settling.items():
        latest = store.one("SELECT MAX(id) AS id FROM live_reviews WHERE product_id = :p "
                           "AND decision IN ('accept', 'correct', 'out_of_scope')", {"p": product_id})["id"]
        assert latest == ids[-1]
    # a reviewer holding the claim is never refused; one whose claim expired is refused
    # exactly when someone settled the product after it was shown to them
    assert all(expired for _, _, expired in refused), "a decision under a live claim was refused"
    for review_id, product_id, seen in stale:
        overtaken = store.one("SELECT COUNT(*) AS n FROM reviews WHERE product_id = :p AND id > :seen AND id < :id "
                              "AND decision IN ('accept', 'correct', 'out_of_scope')",
                              {"p": product_id, "seen": seen, "id": review_id})["n"]
        assert overtaken == 0, f"review {review_id} was saved on a stale screen (product {product_id})"
    assert store.one("PRAGMA integrity_check")["integrity_check"] == "ok"
    # what the run exercised, so a quiet run (no conflicts, no races) is visible in -v output
    print(f"confirmed={len(confirmed)} stale-but-saved={len(stale)} refused={len(refused)} settled={len(settling)}")
