"""The Data browser and Team pages through streamlit.testing.v1.AppTest, on the real
SQLite store: filters, a product's history, bulk accept → undo (a later decision
survives), the export downloads, settling a disagreement — and bad input on each.

The pages are run as files with a logged-in user in the session (as in
test_app_pages.run_page_directly); the last test goes through the real app (log-in,
streamlit_app.py's navigation) in chromium for what AppTest cannot click."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.studio import add_predicted_product, make_users
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from core.studio.review_queue import record_review

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the pages import `core` and `pages._ui`
    sys.path.insert(0, str(ROOT))
BROWSE, TEAM = str(ROOT / "pages" / "browse.py"), str(ROOT / "pages" / "team.py")
NO_ACCESS = "You do not have access to this page."
PASSWORD = "plum-kiwi-9017"


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rita", "reviewer"), ("bob", "reviewer"), ("victor", "viewer"), password=PASSWORD)


@pytest.fixture
def products(store) -> list[int]:
    """30 products: even ones predicted Toys at .70, odd ones Kitchen at .90 (10 of them
    mention "skillet"), labels Kitchen, Toys, Watches."""
    return [add_predicted_product(store, [0.9, 0.05, 0.05] if i % 2 else [0.2, 0.7, 0.1],
                                  text=f"{'Acme skillet' if i % 3 == 0 else 'plush toy'} number {i}")[0]
            for i in range(30)]


@pytest.fixture
def downloads(monkeypatch) -> dict:
    """The download buttons' deferred builders, by file name (Streamlit calls them on click)."""
    captured: dict = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        captured[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return captured


def open_page(path: str, user) -> AppTest:
    at = AppTest.from_file(path, default_timeout=60)
    at.session_state["user"] = user
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def table(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value


def match_caption(at: AppTest) -> str:
    return next(c for c in texts(at.caption) if " match (" in c)


def markdown(at: AppTest) -> str:
    return "\n".join(texts(at.markdown))


def settled(store) -> dict[int, tuple[str, str, int | None]]:
    return {r["product_id"]: (r["reviewer"], r["new_label"], r["bulk_id"])
            for r in store.query("SELECT * FROM settled")}


# --------------------------------------------------------------------------- data browser


def test_browse_filter_open_history_bulk_accept_undo_and_export(store, users, products, downloads):
    rita = users["rita"]
    at = open_page(BROWSE, rita)
    assert texts(at.title) == ["Data browser"]
    assert match_caption(at).startswith("**30** products match (all products)")
    assert len(table(at)) == 30

    # search, then narrow by predicted label
    at.text_input(key="browse_text").input("SKILLET")
    ok(at.run())
    assert match_caption(at).startswith("**10** products match")
    assert all("skillet" in t for t in table(at)["text"])
    at.selectbox(key="browse_label_kind").select("predicted")
    at.selectbox(key="browse_label").select("Kitchen")
    ok(at.run())
    assert match_caption(at).startswith("**5** products match (text contains “SKILLET”; predicted label = Kitchen)")
    assert set(table(at)["predicted_label"]) == {"Kitchen"}

    # one product's history, one step away
    first = int(table(at)["product_id"].iloc[0])
    at.number_input(key="browse_product").set_value(first)
    ok(at.run())
    assert f"**Product {first}** · source test" in markdown(at)
    assert "Label: none yet · status unreviewed" in markdown(at)
    assert [t.label for t in at.tabs] == ["Predictions (1)", "Decisions (0)", "Suggestions (0)", "Bulk actions (0)"]

    # bulk accept the 5 shown (all pages of the filter), previewed per class
    at.slider(key="bulk_threshold").set_value(0.85)
    ok(at.run())
    assert "**5** of the 5 products in the filter would be accepted." in markdown(at)
    assert at.get("vega_lite_chart"), "the per-class preview chart"
    assert at.button(key="bulk_accept").disabled  # not before the confirmation
    at.checkbox(key="bulk_confirm_0").check()
    ok(at.run())
    # a confident product arriving after the preview is not part of what was confirmed
    late, _ = add_predicted_product(store, [0.95, 0.03, 0.02], text="Acme skillet, scored just now")
    at.button(key="bulk_accept").click()
    ok(at.run())
    assert texts(at.success) == ["Accepted 5 products (bulk action 1)."]
    assert len(settled(store)) == 5 and {v[:2] for v in settled(store).values()} == {("rita", "Kitchen")}
    assert late not in settled(store)
    assert not at.checkbox(key="bulk_confirm_1").value  # a fresh confirmation for the next action
    assert "**1** of the 6 products" in markdown(at)  # the late one, for a next bulk action
    assert any(i.startswith("Bulk action 1: 5 products accepted at ≥ 85%") for i in texts(at.info))
    assert [t.label for t in at.tabs][3] == "Bulk actions (1)"  # the history shows it

    # bob decides one of them afterwards; undo keeps his decision
    record_review(store, users["bob"], first, "correct", new_label="Toys")
    at.button(key="bulk_undo").click()
    ok(at.run())
    assert texts(at.success) == ["Undid 4 decisions; 1 kept because someone decided them afterwards."]
    assert settled(store) == {first: ("bob", "Toys", None)}
    assert not [b for b in at.button if b.key == "bulk_undo"]

    # the export builds the files the buttons download
    assert {b.label for b in at.get("download_button")} == {
        "Labelled dataset (CSV)", "Labelled dataset (PARQUET)", "Decision log (CSV)", "Decision log (PARQUET)"}
    dataset = pd.read_csv(io.BytesIO(downloads["labelled_dataset.csv"]()))
    assert dataset[["product_id", "label", "label_source"]].values.tolist() == [[first, "Toys", "reviewer"]]
    assert pd.read_parquet(io.BytesIO(downloads["labelled_dataset.parquet"]()))["product_id"].tolist() == [first]
    assert pd.read_csv(io.BytesIO(downloads["decision_log.csv"]()))["decision"].tolist() == ["accept"] * 5 + [
        "correct"]
    log = pd.read_parquet(io.BytesIO(downloads["decision_log.parquet"]()))
    assert len(log) == 6 and log["revoked_by"].tolist().count("rita") == 4


def test_browse_as_a_viewer_reads_but_cannot_bulk_or_export(store, users, products):
    at = open_page(BROWSE, users["victor"])
    assert len(table(at)) == 30
    assert not [b for b in at.button if b.key == "bulk_accept"]
    assert not at.get("download_button")
    assert "Bulk accept" not in texts(at.subheader) and "Export" not in texts(at.subheader)
    at.selectbox(key="browse_status").select("unreviewed")
    ok(at.run())
    assert match_caption(at).startswith("**30** products match (status unreviewed)")


def test_browse_pages_through_results(store, users, products):
    at = open_page(BROWSE, users["rita"])
    at.selectbox(key="browse_page_size").select(25)
    ok(at.run())
    assert len(table(at)) == 25 and "showing 1–25" in match_caption(at)
    at.number_input(key="browse_page").set_value(2)
    ok(at.run())
    assert len(table(at)) == 5 and "showing 26–30" in match_caption(at)
    assert set(table(at)["product_id"]) == set(products[:5])  # newest first: page 2 holds the oldest
    at.text_input(key="browse_text").input("skillet")  # fewer results: back to a page that exists
    ok(at.run())
    assert at.number_input(key="browse_page").value == 1 and len(table(at)) == 10


def test_browse_bad_input_says_so_and_writes_nothing(store, users, products):
    rita = users["rita"]
    at = open_page(BROWSE, rita)
    at.number_input(key="browse_product").set_value(99999)
    ok(at.run())
    assert texts(at.error) == ["no product 99999"]
    at.text_input(key="browse_text").input("%no such thing_")
    ok(at.run())
    assert match_caption(at).startswith("**0** products match") and table(at).empty
    assert at.checkbox(key="bulk_confirm_0").disabled  # nothing to accept, nothing to confirm

    # the selection is decided by someone else between the preview and the click
    at.text_input(key="browse_text").input("")
    at.slider(key="bulk_threshold").set_value(0.85)
    ok(at.run())
    at.checkbox(key="bulk_confirm_0").check()
    ok(at.run())
    for product in products[1::2]:
        record_review(store, users["bob"], product, "accept")
    at.button(key="bulk_accept").click()
    ok(at.run())
    assert texts(at.error) == ["no product 99999", "Nothing was accepted: no undecided product in the selection has "
                               "a confidence of 85% or more; nothing was accepted"]
    assert store.one("SELECT COUNT(*) AS n FROM bulk_actions")["n"] == 0
    assert store.one("SELECT COUNT(*) AS n FROM reviews WHERE reviewer = 'rita'")["n"] == 0


# --------------------------------------------------------------------------- team


@pytest.fixture
def disputed(store, users, products) -> list[int]:
    """Three products (predicted Toys) rita and bob decided differently, one they agree on."""
    rita, bob = users["rita"], users["bob"]
    for product in products[0:6:2]:
        record_review(store, rita, product, "accept")  # Toys
        record_review(store, bob, product, "correct", new_label="Watches")
    record_review(store, rita, products[6], "accept")
    record_review(store, bob, products[6], "accept")
    return products[0:6:2]


def test_team_shows_reviewers_and_settles_disagreements(store, users, disputed):
    at = open_page(TEAM, users["admin"])
    assert texts(at.title) == ["Team"]
    stats = table(at)
    assert stats["reviewer"].tolist() == ["bob", "rita"]
    assert stats.set_index("reviewer").loc["rita", "agreement_with_others"] == 0.25  # 1 of 4 later decisions
    assert at.get("vega_lite_chart"), "the per-reviewer chart"
    assert "**3** products where reviewers' latest decisions differ" in " ".join(texts(at.caption))
    assert set(at.dataframe[1].value["product_id"]) == set(disputed)

    product = at.selectbox(key="team_product").value
    assert product in disputed
    radio = at.radio(key=f"team_label_{product}")
    assert radio.options == ["Toys", "Watches"]
    radio.set_value("Watches")
    at.text_input(key=f"team_note_{product}").input("the photo shows a dial")
    at.button(key=f"team_settle_{product}").click()
    ok(at.run())
    assert texts(at.success) == [f"Product {product} settled as Watches."]
    decision = store.one("SELECT * FROM settled WHERE product_id = ?", [product])
    assert (decision["reviewer"], decision["decision"], decision["new_label"], decision["note"]) == (
        "admin", "correct", "Watches", "the photo shows a dial")
    assert set(at.dataframe[1].value["product_id"]) == set(disputed) - {product}

    # the next product starts with nothing chosen (widgets are keyed by product)
    following = at.selectbox(key="team_product").value
    assert following != product and at.radio(key=f"team_label_{following}").value is None
    for remaining in set(disputed) - {product}:
        at.selectbox(key="team_product").set_value(remaining)
        ok(at.run())
        at.radio(key=f"team_label_{remaining}").set_value("Toys")
        at.button(key=f"team_settle_{remaining}").click()
        ok(at.run())
    assert texts(at.success)[-1] == "No open disagreements: every product two reviewers decided differently has " \
                                    "been settled."
    assert {settled(store)[p][:2] for p in set(disputed) - {product}} == {("admin", "Toys")}


def test_team_bad_input_and_access(store, users, disputed):
    at = open_page(TEAM, users["admin"])
    product = at.selectbox(key="team_product").value
    at.button(key=f"team_settle_{product}").click()  # no label chosen
    ok(at.run())
    assert texts(at.error) == ["Pick the right label first."]
    assert store.one("SELECT COUNT(*) AS n FROM reviews WHERE reviewer = 'admin'")["n"] == 0

    # rita decides again while the admin looks at the product: the admin's click is refused
    at.radio(key=f"team_label_{product}").set_value("Toys")
    ok(at.run())
    record_review(store, users["rita"], product, "correct", new_label="Kitchen")
    at.button(key=f"team_settle_{product}").click()
    ok(at.run())
    assert len(texts(at.error)) == 1 and texts(at.error)[0].startswith("Could not settle: someone decided meanwhile")
    assert store.one("SELECT COUNT(*) AS n FROM reviews WHERE reviewer = 'admin'")["n"] == 0

    for name in ("rita", "victor"):
        forced = open_page(TEAM, users[name])
        assert texts(forced.error) == [NO_ACCESS] and not forced.title and not forced.dataframe


def test_team_with_no_decisions_says_so(store, users):
    at = open_page(TEAM, users["admin"])
    assert texts(at.info)[0].startswith("Nobody has decided anything yet.")
    assert texts(at.success) == ["No open disagreements: every product two reviewers decided differently has "
                                 "been settled."]


# --------------------------------------------------------------------------- in a real browser


def test_browser_row_click_opens_history_and_the_csv_downloads(store, users, products, studio_home, tmp_path):
    """What AppTest cannot do: pick a row in the table (a canvas grid) and download a file
    built on click, through the real app (log-in, navigation) in chromium."""
    from helpers.browser import browser_page, chromium_path, log_in, streamlit_server

    if chromium_path() is None:
        pytest.skip("Debian chromium is not installed")
    record_review(store, users["bob"], products[-1], "correct", new_label="Watches")
    env = {**os.environ, "STUDIO_HOME": str(studio_home)}
    with streamlit_server(env, tmp_path / "streamlit.log") as url, browser_page((1400, 1400)) as page:
        log_in(page, url, "rita", PASSWORD)
        page.get_by_role("link", name="Data browser").click()
        grid = page.locator('[data-testid="stDataFrame"]')
        grid.wait_for(timeout=60_000)
        page.get_by_text("30 products match").wait_for()
        page.wait_for_timeout(1000)  # the grid draws its rows after it appears
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 15, box["y"] + 36 + 35 + 17)  # the selection cell of the 2nd row (newest first)
        second_newest = products[-2]
        page.get_by_text(f"Product {second_newest} · source test").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Predictions (1)").wait_for()

        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Labelled dataset (CSV)").click()
        saved = tmp_path / "dataset.csv"
        download.value.save_as(saved)
    dataset = pd.read_csv(saved)
    assert dataset[["product_id", "label", "label_source"]].values.tolist() == [[products[-1], "Watches", "reviewer"]]
