"""`python -m core users …`: shell recovery by whoever owns the server's files (issue 10,
item 5). Real subprocesses against a real database; passwords only ever on stdin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "core", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home


def test_add_users_and_reset_a_password_from_the_shell(home):
    from core.studio.auth import authenticate
    from core.studio.sessions import create_session, resume_session
    from core.studio.store import Store

    done = cli(home, "users", "add", "boss", "--role", "admin", stdin="plum-kiwi-9017\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "added boss (admin)" and done.stdout == ""
    done = cli(home, "users", "add", "rita", "--role", "reviewer", "--must-change-password",
               stdin="desk-lamp-4711\n")
    assert done.returncode == 0, done.stderr
    store = Store()
    rows = {r["username"]: r for r in store.query("SELECT username, role, must_change_password, created_by "
                                                  "FROM users")}
    assert rows["boss"]["role"] == "admin" and rows["boss"]["created_by"] == "bootstrap"
    assert (rows["rita"]["role"], rows["rita"]["must_change_password"], rows["rita"]["created_by"]) == \
        ("reviewer", 1, "cli")

    # a forgotten password: reset from the shell, every session of hers ends
    rita = authenticate(store, "rita", "desk-lamp-4711")
    cookies = [create_session(store, rita), create_session(store, rita)]
    done = cli(home, "users", "reset-password", "RITA", stdin="new-desk-lamp-2\n")
    assert done.returncode == 0, done.stderr
    assert "sessions ended" in done.stderr
    assert [resume_session(store, c) for c in cookies] == [None, None]
    assert authenticate(store, "rita", "desk-lamp-4711") is None
    assert authenticate(store, "rita", "new-desk-lamp-2").username == "rita"
    # no password ever reaches the database or the audit log in clear
    dump = str(store.query("SELECT * FROM users")) + str(store.query("SELECT * FROM audit"))
    assert "desk-lamp" not in dump and "plum-kiwi" not in dump


@pytest.mark.parametrize("args, stdin, message", [
    (("users", "add", "vic", "--role", "superuser"), "plum-kiwi-9017\n", "unknown role 'superuser'"),
    (("users", "add", "vic", "--role", "viewer"), "password123\n", "most common"),
    (("users", "add", "vic", "--role", "viewer"), "short\n", "at least 10"),
    (("users", "add", "victoria", "--role", "viewer"), "victoria-blue-pen\n", "username"),
    (("users", "add", "x", "--role", "viewer"), "plum-kiwi-9017\n", "username has 2–64"),
    (("users", "add", "vic", "--role", "viewer"), "", "give the new password on stdin"),
    (("users", "add", "BOSS", "--role", "viewer"), "plum-kiwi-9017\n", "taken"),
    (("users", "reset-password", "ghost"), "plum-kiwi-9017\n", "no user 'ghost'"),
    (("users", "reset-password", "boss"), "qwerty123456\n", "most common"),
])
def test_bad_input_is_one_error_line_and_exit_2(home, monkeypatch, args, stdin, message):
    from helpers.studio import cheap_hashes

    from core.studio.auth import create_user
    from core.studio.store import Store

    cheap_hashes(monkeypatch)
    create_user(Store(), "boss", "plum-kiwi-9017", "admin")
    done = cli(home, *args, stdin=stdin)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_users_help_does_not_load_tensorflow(home):
    code = ("import sys\nfrom core.cli.main import main\ntry:\n    main(['users', 'add', '--help'])\n"
            "except SystemExit:\n    pass\nprint('TF' if 'tensorflow' in sys.modules else 'no TF')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "STUDIO_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert "--role ROLE" in done.stdout and done.stdout.strip().endswith("no TF")
