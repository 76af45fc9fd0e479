"""The log-in survives a reload, in a real browser: `streamlit run` with a small home and
Debian's chromium (Playwright). F5, a new tab of the same browser and a deep link keep the
user logged in on the page they asked for; log-out ends it in every tab; a password
change in one browser logs the other out at its next action; a garbled, forged, expired
or revoked cookie lands on the log-in form without a traceback."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from helpers.app_home import PASSWORDS, build_app_home
from helpers.browser import chromium_browser, chromium_path, log_in, streamlit_server

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian chromium is not installed "
                                "(.ci/run installs it: apt-get install chromium)")

COOKIE = "studio_session"
WAIT = 60_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path):
    """One server for the module (start-up and the first model load cost seconds): its
    URL and its database."""
    from core.studio.store import Store

    root = tmp_path_factory.mktemp("session_app")
    built = build_app_home(root / "home", tiny_bundle)
    with streamlit_server(built.env(), root / "streamlit.log") as url:
        yield url, Store(built.home / "data" / "studio.db")


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as launched:
        yield launched


def shows_login_form(page) -> None:
    page.get_by_role("button", name="Log in").wait_for(timeout=WAIT)
    page.get_by_label("Username").wait_for(timeout=WAIT)


def shows_page(page, title: str, username: str) -> None:
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=WAIT)
    page.locator("[data-testid=stSidebar]").get_by_text(username).first.wait_for(timeout=WAIT)


def no_traceback(page) -> None:
    assert page.locator("[data-testid=stException]").count() == 0
    assert "Traceback" not in page.content()


def session_cookie(context) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == COOKIE), None)


def wait_for_cookie(context, present: bool = True, timeout: float = 20) -> dict | None:
    deadline = time.monotonic() + timeout
    while (session_cookie(context) is not None) != present:
        assert time.monotonic() < deadline, f"the session cookie was {'never set' if present else 'not removed'}"
        time.sleep(0.2)
    return session_cookie(context)


def live_sessions(store, username: str) -> list[dict]:
    return store.query("SELECT s.* FROM sessions s JOIN users u ON u.id = s.user_id "
                       "WHERE u.username = ? AND s.revoked_at IS NULL", [username])


def test_reload_new_tab_and_deep_link_keep_the_log_in_until_log_out(served, browser):
    url, store = served
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        log_in(page, url, "rita", PASSWORDS["rita"])
        shows_page(page, "Predict a category", "rita")
        cookie = wait_for_cookie(context)

        # the cookie: signed token, Path=/, SameSite=Strict, not Secure over http; the
        # database holds only the token's hash; the token is never in a URL
        assert cookie["path"] == "/" and cookie["sameSite"] == "Strict" and not cookie["secure"]
        token, signature = cookie["value"].split(".")
        assert len(token) >= 40 and signature
        [row] = live_sessions(store, "rita")
        assert row["id"] == hashlib.sha256(token.encode()).hexdigest() and token not in str(row)
        assert "HeadlessChrome" in row["user_agent"]

        # F5 on a page other than the default: still logged in, on that page
        page.locator("[data-testid=stSidebarNav]").get_by_role("link", name="Monitor").click()
        shows_page(page, "Monitor", "rita")
        assert page.url.endswith("/monitor") and token not in page.url
        page.reload()
        shows_page(page, "Monitor", "rita")
        no_traceback(page)

        # a new tab of the same browser, then a deep link typed into it
        tab = context.new_page()
        tab.goto(url)
        shows_page(tab, "Predict a category", "rita")
        tab.goto(f"{url}/review")
        shows_page(tab, "Review queue", "rita")
        assert len(live_sessions(store, "rita")) == 1  # the tabs share one session

        # log out in the first tab: a reload asks to log in, and the other tab is out at its next action
        page.get_by_role("button", name="Log out").click()
        shows_login_form(page)
        assert page.get_by_label("Password", exact=True).input_value() == ""  # nothing to click back in with
        wait_for_cookie(context, present=False)
        assert live_sessions(store, "rita") == []
        page.reload()
        shows_login_form(page)
        tab.locator("[data-testid=stSidebarNav]").get_by_role("link", name="Monitor").click()
        shows_login_form(tab)
        tab.get_by_text("You were logged out").wait_for(timeout=WAIT)
        tab.goto(f"{url}/monitor")
        shows_login_form(tab)
        no_traceback(tab)
    finally:
        context.close()


def change_password_in_sidebar(page, old: str, new: str) -> None:
    if not page.get_by_label("Current password").is_visible():  # the popover may still be open
        page.locator("[data-testid=stSidebar]").get_by_role("button", name="Change password").click()
    page.get_by_label("Current password").fill(old)
    page.get_by_label("New password (10 characters or more").fill(new)
    page.get_by_label("New password again").fill(new)
    page.get_by_role("button", name="Save password").click()


@pytest.mark.slow  # 14 s: two browsers (test_sessions checks the revocation itself in the default run)
def test_a_password_change_logs_out_the_other_browsers(served, browser):
    url, store = served
    first, second = browser.new_context(), browser.new_context()  # two browsers: two cookie jars
    try:
        a, b = first.new_page(), second.new_page()
        log_in(a, url, "victor", PASSWORDS["victor"])
        shows_page(a, "Predict a category", "victor")
        log_in(b, url, "victor", PASSWORDS["victor"])
        shows_page(b, "Predict a category", "victor")
        wait_for_cookie(first)
        wait_for_cookie(second)
        assert len(live_sessions(store, "victor")) == 2

        # bad input first: a wrong current password changes nothing
        change_password_in_sidebar(a, "not-my-password", "viewer-new-pass-2")
        a.get_by_text("the current password is wrong").wait_for(timeout=WAIT)
        assert len(live_sessions(store, "victor")) == 2

        change_password_in_sidebar(a, PASSWORDS["victor"], "viewer-new-pass-2")
        a.get_by_text("your other sessions are logged out").wait_for(timeout=WAIT)
        assert len(live_sessions(store, "victor")) == 1

        b.locator("[data-testid=stSidebarNav]").get_by_role("link", name="Monitor").click()
        shows_login_form(b)
        b.get_by_text("You were logged out").wait_for(timeout=WAIT)
        b.reload()
        shows_login_form(b)

        a.reload()  # the browser that changed it stays logged in
        shows_page(a, "Predict a category", "victor")
        no_traceback(a)
        no_traceback(b)
    finally:
        first.close()
        second.close()
        # the module's other tests log in with the known password
        from core.studio.auth import authenticate, change_password

        user = authenticate(store, "victor", "viewer-new-pass-2")
        if user is not None:
            change_password(store, user, "viewer-new-pass-2", PASSWORDS["victor"])


@pytest.mark.slow  # 23 s: forged, revoked and expired cookies in a browser (test_sessions covers each reason)
def test_a_bad_or_ended_cookie_lands_on_the_log_in_form(served, browser):
    from core.studio.auth import authenticate
    from core.studio.sessions import create_session, revoke_session

    url, store = served
    admin = authenticate(store, "admin", PASSWORDS["admin"])
    expired = create_session(store, admin, "test")
    with store.transaction() as db:  # past its absolute limit, though used a moment ago
        db.execute("UPDATE sessions SET expires_at = ? WHERE id = ?",
                   [time.time() - 1, hashlib.sha256(expired.split(".")[0].encode()).hexdigest()])
    revoked = create_session(store, admin, "test")
    revoke_session(store, revoked)
    valid_token = create_session(store, admin, "test").split(".")[0]
    cases = {
        "garbled": "not-a-session-cookie",
        "forged": f"{valid_token}.{'A' * 43}",  # a real token with a signature this server never made
        "expired": expired,
        "revoked": revoked,
        "huge": "x" * 3000,
    }
    for name, value in cases.items():
        context = browser.new_context()
        try:
            host = url.split("//")[1].split(":")[0]
            context.add_cookies([{"name": COOKIE, "value": value, "domain": host, "path": "/"}])
            page = context.new_page()
            page.goto(f"{url}/monitor")
            shows_login_form(page)
            if name == "expired":
                page.get_by_text("Your session expired; please log in again.").wait_for(timeout=WAIT)
            assert page.get_by_role("heading", name="Monitor").count() == 0, name
            no_traceback(page)
            wait_for_cookie(context, present=False)  # the dead cookie is dropped
            log_in(page, url, "admin", PASSWORDS["admin"])  # and logging in works as usual
            shows_page(page, "Predict a category", "admin")
        finally:
            context.close()
