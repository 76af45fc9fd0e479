"""The settings: one reader of the environment, sensible defaults for bad values, and a
changed variable seen at the next call."""

from __future__ import annotations

import ast
from pathlib import Path

from core.common.settings import ENVIRONMENT, REPO_ROOT, Settings, get_settings


def test_defaults_need_no_environment():
    settings = Settings.from_environ({})
    assert settings.home == REPO_ROOT and settings.port == 8501 and settings.address == "127.0.0.1"
    assert settings.admin_user == "admin" and settings.session_idle_minutes is None
    assert not settings.allow_private_urls and settings.url_allowlist == () and settings.explain_warm_up


def test_unreadable_values_fall_back_instead_of_failing(tmp_path):
    settings = Settings.from_environ({"STUDIO_PORT": "eighty", "STUDIO_SESSION_IDLE_MINUTES": "nan",
                                      "STUDIO_DOWNLOAD_CACHE_MB": "inf", "STUDIO_ADMIN_USER": "  ",
                                      "STUDIO_URL_ALLOWLIST": " a.example , ,10.0.0.0/8",
                                      "STUDIO_ALLOW_PRIVATE_URLS": "Yes", "STUDIO_HOME": str(tmp_path)})
    assert settings.port == 8501 and settings.session_idle_minutes is None and settings.download_cache_mb is None
    assert settings.admin_user == "admin" and settings.url_allowlist == ("a.example", "10.0.0.0/8")
    assert settings.allow_private_urls and settings.home == tmp_path.resolve()
    assert Settings.from_environ({"STUDIO_PORT": "70000"}).port == 8501


def test_a_changed_variable_applies_at_the_next_call(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_SESSION_IDLE_MINUTES", "5")
    assert get_settings().session_idle_minutes == 5
    assert get_settings() is get_settings()  # built once for the same values
    monkeypatch.setenv("STUDIO_SESSION_IDLE_MINUTES", "7")
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path))
    assert get_settings().session_idle_minutes == 7 and get_settings().models_dir == tmp_path.resolve() / "models"


def test_nothing_else_reads_the_environment():
    """Only core/common/settings.py reads os.environ / os.getenv (writing a library's own
    variable, as tf_setup does for TensorFlow, is not reading ours)."""
    readers = []
    for path in [*Path(REPO_ROOT, "core").rglob("*.py"), *Path(REPO_ROOT, "pages").rglob("*.py"),
                 Path(REPO_ROOT, "streamlit_app.py")]:
        if path.name == "settings.py" and path.parent.name == "common":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("get", "__getitem__", "getenv", "environ"):
                text = ast.unparse(node)
                if text in ("os.environ.get", "os.getenv"):
                    readers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                readers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert readers == []
    assert all(name.startswith(("STUDIO_", "MLFLOW_")) for name in ENVIRONMENT)
