"""Driving the app through streamlit.testing.v1.AppTest: a logged-in app, its pages, and
what they show. Use with the `fresh_streamlit_process` fixture (tests/conftest.py):
`st.cache_resource` lives in the process, so one test's cached Store would point at the
previous test's STUDIO_HOME."""

from __future__ import annotations

import io
import json
import random
import shutil
import sys
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from helpers.app_home import PASSWORDS
from helpers.catalogues import CLASS_SPECS, draw_product, write_catalogue

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")
if str(ROOT) not in sys.path:  # the app imports `core` and `pages._ui`
    sys.path.insert(0, str(ROOT))

TIMEOUT = 120
PAGES = {
    "predict": "pages/predict.py",
    "batch": "pages/batch.py",
    "review": "pages/review.py",
    "monitor": "pages/monitor.py",
    "models": "pages/models.py",
    "users": "pages/users.py",
    "my_decisions": "pages/my_decisions.py",
    "browse": "pages/browse.py",
    "team": "pages/team.py",
}
TITLES = {"predict": "Predict a category", "batch": "Score a batch", "review": "Review queue",
          "monitor": "Monitor", "models": "Models", "users": "Users", "my_decisions": "My decisions",
          "browse": "Data browser", "team": "Team"}
ALLOWED = {
    "admin": set(PAGES),
    "rita": {"predict", "batch", "review", "monitor", "my_decisions", "browse"},
    "victor": {"predict", "monitor", "browse"},
}
NO_ACCESS = "You do not have access to this page."


# --------------------------------------------------------------------------- helpers


def store():
    from core.studio.store import Store

    return Store()


def count(table: str) -> int:
    return store().one(f"SELECT COUNT(*) AS n FROM {table}")["n"]


def user_object(username: str):
    from core.studio.auth import User

    row = store().one("SELECT id, username, role FROM users WHERE username = ?", [username])
    return User(row["id"], row["username"], row["role"])


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def login(username: str, password: str | None = None, at: AppTest | None = None) -> AppTest:
    at = at or new_app().run()
    at.text_input(key="login_username").input(username)
    at.text_input(key="login_password").input(PASSWORDS.get(username, "") if password is None else password)
    button(at, "Log in").click()
    return ok(at.run())


def button(at: AppTest, label: str):
    """A button (form submit buttons included) by its label."""
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return found[0]


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def shows_login_form(at: AppTest) -> bool:
    keys = {w.key for w in at.text_input}
    return titles(at) == ["Catalog Studio"] and {"login_username", "login_password"} <= keys


def in_navigation(at: AppTest, page: str) -> bool:
    """Whether `page` is one of the pages st.navigation offered in the last run
    (AppTest.switch_page refuses a file the navigation did not register)."""
    try:
        at.switch_page(page)
    except ValueError:
        return False
    return True


def open_page(at: AppTest, name: str) -> AppTest:
    at.switch_page(PAGES[name])
    return ok(at.run())


def run_page_directly(name: str, username: str) -> AppTest:
    """Force a page: run its file with a logged-in user in the session, as if the
    navigation had been bypassed."""
    at = AppTest.from_file(str(ROOT / PAGES[name]), default_timeout=TIMEOUT)
    at.session_state["user"] = user_object(username)
    return ok(at.run())


def plotly_keys(at: AppTest) -> set[str]:
    return {el.key for el in at.get("plotly_chart")}


def png_bytes(cls: str = "Watches", seed: int = 1, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    draw_product(CLASS_SPECS[cls][1], size, random.Random(seed)).save(buf, "PNG")
    return buf.getvalue()


def sidebar_text(at: AppTest) -> str:
    return " ".join(str(el.value) for el in [*at.sidebar.markdown, *at.sidebar.caption])


def live_version() -> str:
    from core.studio.registry import live_model

    return live_model(store()).version


def classifier():
    """The live model as the pages load it (the same cache entry)."""
    from core.studio.registry import live_model
    from pages._ui.model import load_classifier

    row = live_model(store())
    return load_classifier(row.path, row.version)



def second_bundle(app_home) -> str:
    """Copy the live bundle under models/ as another version."""
    target = app_home.home / "models" / "tiny-copy"
    shutil.copytree(app_home.bundle, target)
    meta_path = target / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = "v-copy-2"
    meta_path.write_text(json.dumps(meta))
    from core.models.bundle import write_manifest

    write_manifest(target)  # saved as this version (a changed file would be refused as tampered)
    return meta["version"]


def catalogue_upload(tmp_path: Path) -> tuple[bytes, bytes, int]:
    """CSV + zip of photos from the generated catalogue, plus one unusable row (no text,
    no photo); returns (csv, zip, usable rows)."""
    cat = write_catalogue(tmp_path / "batch", n_per_class=3, classes=("Watches", "Kitchen", "Toys"),
                          image_size=(64, 48), seed=11)
    csv_bytes = cat.csv_path.read_bytes() + b',,Toys,\n'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for path in sorted(cat.image_dir.iterdir()):
            archive.write(path, f"photos/{path.name}")
    return csv_bytes, buf.getvalue(), len(cat.rows)


