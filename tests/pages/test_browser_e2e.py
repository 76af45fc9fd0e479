"""End to end in a real browser: `streamlit run` on a free loopback port with a temporary
home and a small trained model, Debian's chromium driven by Playwright. A reviewer logs
in, uploads a photo and a description, sees the probabilities, corrects the label (the
review must then be in SQLite); an admin then retrains from the catalogue plus that
correction, compares, promotes, and sees the new version in the sidebar. `.ci/run`
installs chromium when it is missing."""

from __future__ import annotations

import io
import json

import pytest
from helpers.app_home import FAST_TRAINING, PASSWORDS, import_catalogue_into
from helpers.browser import browser_page, choose, chromium_path, log_in, streamlit_server
from PIL import Image, ImageDraw

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian chromium is not installed "
                                "(.ci/run installs it: apt-get install chromium)")


def red_watch_photo() -> bytes:
    """The tiny model's 'Watches' colour (conftest.CLASS_SPECS) on white."""
    img = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(img).ellipse((12, 6, 52, 42), fill=(220, 40, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow  # 90 s: a whole training run behind the browser (AppTest and the learning-loop tests cover each step)
def test_predict_correct_retrain_promote(app_home, tmp_path):
    from core.studio.registry import live_model
    from core.studio.store import Store

    assert import_catalogue_into(app_home) > 0
    store = Store(app_home.home / "data" / "studio.db")
    first_version = live_model(store).version
    photo = tmp_path / "watch.png"
    photo.write_bytes(red_watch_photo())
    env = {**app_home.env(), "STUDIO_TRAIN_OPTIONS": FAST_TRAINING}
    with streamlit_server(env, tmp_path / "streamlit.log") as url, browser_page() as page:
        log_in(page, url, "rita", PASSWORDS["rita"])
        page.get_by_text("Predict a category").wait_for(timeout=60_000)
        page.get_by_text("Live model").wait_for()

        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.get_by_label("Description").fill("Acme analog wrist watch with leather strap and dial")
        page.get_by_role("button", name="Classify").click()
        page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        heading = page.locator("h3").filter(has_text="%").first.inner_text()
        predicted = heading.split("·")[0].strip()
        assert predicted in ("Watches", "Kitchen", "Toys")

        right = next(c for c in ("Toys", "Kitchen", "Watches") if c != predicted)
        choose(page, "No, the right category is", right)
        page.get_by_role("button", name="Save correction").click()
        page.get_by_text(f"Saved: corrected to {right}.").wait_for(timeout=30_000)
        check_review_saved(store, predicted, right)

        # an admin retrains from the catalogue + the correction, compares, promotes
        page.get_by_role("button", name="Log out").click()
        page.get_by_role("button", name="Log in").wait_for(timeout=60_000)  # logged out before the next log-in
        log_in(page, url, "admin", PASSWORDS["admin"])
        page.get_by_role("link", name="Models").click()
        page.get_by_role("button", name="Train from the catalogue and the corrections").click()
        page.get_by_text("finished: version").wait_for(timeout=240_000)
        job = store.one("SELECT state, result FROM jobs WHERE kind = 'train' ORDER BY id DESC")
        assert job["state"] == "done", job
        new_version = json.loads(job["result"])["version"]
        assert json.loads(job["result"])["trained_from"]["reviewed"] == 1  # the correction was trained on
        try:
            page.get_by_text("Held-out products").wait_for(timeout=120_000)  # the comparison of the new version
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(tmp_path / "failure.png")
            raise
        if page.get_by_text("I know it scores worse").count():
            page.get_by_text("I know it scores worse").click()
        page.get_by_role("button", name=f"Make {new_version} live").click()
        page.locator("[data-testid=stSidebar]").get_by_text(new_version).wait_for(timeout=60_000)

    assert new_version != first_version and live_model(store).version == new_version
    assert store.one("SELECT COUNT(*) AS n FROM audit WHERE action = 'model.promote'")["n"] == 1


def check_review_saved(store, predicted: str, right: str) -> None:
    reviews = store.query("SELECT r.*, p.label AS predicted, p.user AS predicted_by, pr.image_hash "
                          "FROM reviews r JOIN predictions p ON p.id = r.prediction_id "
                          "JOIN products pr ON pr.id = r.product_id")
    assert len(reviews) == 1
    review = reviews[0]
    assert (review["decision"], review["old_label"], review["new_label"]) == ("correct", predicted, right)
    assert review["reviewer"] == "rita" and review["predicted_by"] == "rita"
    assert review["image_hash"] is not None  # the photo was stored with the product


def test_a_deep_link_on_a_fresh_server_asks_to_log_in(app_home, tmp_path):
    """A fresh server's first request to /batch would run pages/batch.py on its own (the
    pages/ folder mode, before any session called st.navigation): it must land on the
    log-in form, not on a page or Streamlit's own page list."""
    with streamlit_server(app_home.env(), tmp_path / "streamlit.log") as url, browser_page() as page:
        page.goto(f"{url}/batch")
        page.get_by_role("button", name="Log in").wait_for(timeout=60_000)
        assert page.get_by_text("Score a batch").count() == 0
        assert page.get_by_text("You do not have access").count() == 0
        log_in(page, url, "rita", PASSWORDS["rita"])
        page.get_by_text("Predict a category").wait_for(timeout=60_000)
