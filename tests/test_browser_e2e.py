"""End to end in a real browser: `streamlit run` on a free loopback port with a temporary
home and a small trained model, Debian's chromium driven by Playwright. A reviewer logs
in, uploads a photo and a description, sees the probabilities, corrects the label; the
review must then be in SQLite. `.ci/run` installs chromium when it is missing."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from app_home import PASSWORDS
from browser import browser_page, chromium_path, choose, log_in, streamlit_server

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian chromium is not installed "
                                "(.ci/run installs it: apt-get install chromium)")


def red_watch_photo() -> bytes:
    """The tiny model's 'Watches' colour (conftest.CLASS_SPECS) on white."""
    img = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(img).ellipse((12, 6, 52, 42), fill=(220, 40, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_log_in_predict_and_correct(app_home, tmp_path):
    from core.store import Store

    photo = tmp_path / "watch.png"
    photo.write_bytes(red_watch_photo())
    with streamlit_server(app_home.env(), tmp_path / "streamlit.log") as url, browser_page() as page:
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

    store = Store(app_home.home / "data" / "studio.db")
    reviews = store.query("SELECT r.*, p.label AS predicted, p.user AS predicted_by, pr.image_hash "
                          "FROM reviews r JOIN predictions p ON p.id = r.prediction_id "
                          "JOIN products pr ON pr.id = r.product_id")
    assert len(reviews) == 1
    review = reviews[0]
    assert (review["decision"], review["old_label"], review["new_label"]) == ("correct", predicted, right)
    assert review["reviewer"] == "rita" and review["predicted_by"] == "rita"
    assert review["image_hash"] is not None  # the photo was stored with the product
