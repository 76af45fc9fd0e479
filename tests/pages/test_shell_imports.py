"""streamlit_app.py is a module, not a package, so import-linter cannot hold it to the house
rules (.importlinter): this test does — the app shell, like the pages, never imports the command
line, TensorFlow/Keras or the database drivers (it goes through core.studio and pages._ui)."""

from __future__ import annotations

import ast
from pathlib import Path

SHELL = Path(__file__).resolve().parents[2] / "streamlit_app.py"
FORBIDDEN = ("core.cli", "tensorflow", "keras", "sqlite3", "sqlite_utils")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_app_shell_keeps_the_pages_rules():
    imported = imported_modules(SHELL)
    assert "pages._ui.session" in imported  # the checker reads the file it means to
    assert [m for m in imported if m.split(".")[0] in FORBIDDEN or m.startswith(FORBIDDEN)] == []
