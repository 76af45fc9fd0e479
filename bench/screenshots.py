"""Refresh the README's screenshots: walk every page in a real browser as a new user would
(log in, classify a Flipkart product, score a batch, review on the keyboard, browse, then
the admin pages) and save one PNG per page.

    STUDIO_HOME=/tmp/shotshome .venv/bin/python bench/screenshots.py [--out assets/screenshots]

Prepares the demo model like `python -m core serve` when the home has none.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from bench_app import products  # noqa: E402
from helpers.browser import browser_page, choose, free_port, log_in, streamlit_server  # noqa: E402

USERS = {"maria": ("admin", "lead-pass-123"), "rita": ("reviewer", "desk-pass-123"),
         "victor": ("viewer", "look-pass-123")}


def ensure_users() -> None:
    from core.studio.auth import User, create_user
    from core.studio.store import Store

    store = Store()
    admin = store.one("SELECT id, username FROM users WHERE role = 'admin' ORDER BY id LIMIT 1")
    by = User(admin["id"], admin["username"], "admin")
    for name, (role, password) in USERS.items():
        if not store.one("SELECT 1 AS x FROM users WHERE username = ?", [name]):
            create_user(store, name, password, role, by=by)


def ensure_queue_and_suspects(n: int = 30) -> None:
    """Some scored products in the queue and a label check, as after a day of use."""
    from core.models.classifier import Classifier
    from core.studio.auth import User, authenticate
    from core.studio.label_check import start_suspects_job
    from core.studio.registry import live_model
    from core.studio.review_queue import pending_count
    from core.studio.scoring import score_product
    from core.studio.store import Store

    store = Store()
    rita = authenticate(store, "rita", USERS["rita"][1])
    if pending_count(store) < 10:
        classifier = Classifier.load(live_model(store).path)
        for text, image in products(n, seed=11):
            score_product(store, classifier, rita, text=text, image=image.read_bytes())
    if store.one("SELECT 1 AS x FROM suspects LIMIT 1") is None:
        start_suspects_job(store, User.system("screenshots"), background=False)


def batch_upload(tmp: Path, rows: int = 20) -> tuple[Path, Path]:
    import pandas as pd

    from core.studio.demo import demo_data_dir

    data = demo_data_dir()
    frame = pd.read_csv(data / "products.csv", dtype=str, keep_default_na=False).sample(rows, random_state=5)
    frame = frame[["uniq_id", "product_name", "description", "image"]]
    csv_path = tmp / "new_listings.csv"
    frame.to_csv(csv_path, index=False)
    zip_path = tmp / "photos.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name in frame["image"]:
            if (data / "images" / name).is_file():
                archive.write(data / "images" / name, f"photos/{name}")
    zip_path.write_bytes(buf.getvalue())
    return csv_path, zip_path


def shot(page, out: Path, name: str) -> None:
    page.wait_for_timeout(1200)  # let charts and toasts settle
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    print(f"saved {out / name}.png", file=sys.stderr)


def open_page(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.wait_for_timeout(1500)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from core.cli.serve import prepare

    prepare(log=lambda m: print(m, file=sys.stderr))
    ensure_users()
    ensure_queue_and_suspects()
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    csv_path, zip_path = batch_upload(tmp)
    text, image = products(1, seed=3)[0]
    log = tmp / "screenshots_streamlit.log"
    with streamlit_server(dict(os.environ), log) as url, browser_page((1400, 1000)) as page:
        page.goto(url)
        page.get_by_role("button", name="Log in").wait_for(timeout=60_000)
        shot(page, args.out, "login")

        log_in(page, url, "rita", USERS["rita"][1])
        page.get_by_text("Predict a category").wait_for(timeout=120_000)
        page.locator("input[type=file]").first.set_input_files(str(image))
        page.get_by_label("Description").fill(text)
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("explained in").wait_for(timeout=180_000)
        shot(page, args.out, "predict")
        page.get_by_text("Words for and against").scroll_into_view_if_needed()
        shot(page, args.out, "predict_why")

        open_page(page, "Batch")
        page.locator("input[type=file]").nth(0).set_input_files(str(csv_path))
        page.locator("input[type=file]").nth(1).set_input_files(str(zip_path))
        page.get_by_role("button", name="Score the batch").click()
        page.get_by_text("Scored ").first.wait_for(timeout=180_000)
        shot(page, args.out, "batch")

        open_page(page, "Review queue")
        page.get_by_text("left for you").wait_for(timeout=60_000)
        for key in "a2a":
            page.keyboard.press(key)
            page.wait_for_timeout(1200)
        shot(page, args.out, "review")
        page.get_by_text("Suspected mislabels", exact=True).click()
        page.wait_for_timeout(2000)
        shot(page, args.out, "review_suspects")

        open_page(page, "My decisions")
        shot(page, args.out, "my_decisions")
        open_page(page, "Data browser")
        shot(page, args.out, "browse")

        page.get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="Log in").wait_for(timeout=60_000)  # logged out before the next log-in
        log_in(page, url, "maria", USERS["maria"][1])
        page.get_by_text("Predict a category").wait_for(timeout=120_000)
        open_page(page, "Monitor")
        shot(page, args.out, "monitor")
        open_page(page, "Models")
        page.wait_for_timeout(4000)  # the comparison of a second version, when there is one
        shot(page, args.out, "models")
        open_page(page, "Users")
        shot(page, args.out, "users")
        choose(page, "For user (enabled users only)", "victor")
        page.get_by_label("What it is for").fill("PIM nightly import")
        page.get_by_role("button", name="Create token").click()
        page.get_by_text("will not be shown again").wait_for(timeout=30_000)
        page.get_by_text("API tokens", exact=True).scroll_into_view_if_needed()
        shot(page, args.out, "users_tokens")
        open_page(page, "Team")
        shot(page, args.out, "team")

        # the HTTP API's documentation, served by `python -m core api` over the same home (offline)
        with api_server(tmp / "screenshots_api.log") as api_url:
            page.goto(f"{api_url}/docs")
            page.locator(".opblock").first.wait_for(timeout=60_000)
            shot(page, args.out, "api_docs")
    return 0


@contextmanager
def api_server(log_path: Path):
    """`python -m core api` on a free port until the block ends; yields its URL."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core", "api", "--port", str(port)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/v2/health/live", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
