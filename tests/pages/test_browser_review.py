"""The review queue in a real browser (Debian chromium + Playwright against `streamlit
run`), on the keyboard as a reviewer works: a correction with a note, then the next item
must start empty (the bug: the last label and note were pre-filled and Save wrote them onto
another product); typing in the note never fires a shortcut; A accepts, 2 picks the second
suggestion, Z undoes, / focuses the picker."""

from __future__ import annotations

import json

import pytest
from helpers.app_home import PASSWORDS
from helpers.browser import browser_page, choose, chromium_path, log_in, streamlit_server, wait_until_drawn

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="Debian chromium is not installed "
                                "(.ci/run installs it: apt-get install chromium)")

TEXTS = ["Acme puzzle doll blocks playset", "Vega ladle kettle nonstick saucepan",
         "Orion lawn shovel watch kettle mixed bag", "Nova watch dial strap wrist analog"]


def score_products(app_home, texts=TEXTS) -> dict[int, object]:
    from core.models.classifier import Classifier
    from core.studio.auth import authenticate
    from core.studio.scoring import score_product
    from core.studio.store import Store

    store = Store()
    rita = authenticate(store, "rita", PASSWORDS["rita"])
    classifier = Classifier.load(app_home.bundle)
    return {s.product_id: s for s in (score_product(store, classifier, rita, text=t) for t in texts)}


def shown_product(page) -> int:
    head = page.locator("strong", has_text="Product ").first
    head.wait_for(timeout=60_000)
    return int(head.inner_text().split()[1])


def wait_for_next(page, previous: int, timeout: float = 30_000) -> int:
    page.wait_for_function(
        """previous => { const el = [...document.querySelectorAll('strong')].find(e => e.innerText.startsWith('Product '));
                         return el && el.innerText !== 'Product ' + previous; }""", arg=previous, timeout=timeout)
    return shown_product(page)


def test_keyboard_review_never_carries_a_correction_over(app_home, tmp_path):
    from core.studio.store import Store

    by_id = score_products(app_home)
    store = Store()
    with streamlit_server(app_home.env(), tmp_path / "streamlit.log") as url, browser_page() as page:
        log_in(page, url, "rita", PASSWORDS["rita"])
        page.get_by_role("link", name="Review queue").click()
        first = shown_product(page)

        labels = by_id[first].prediction.labels
        target = next(label for label in labels if label != by_id[first].prediction.label)
        choose(page, "Correct to", target)
        note = page.get_by_label("Note (optional)")
        note.fill("a sad toy, as seen")  # 'a', 's', 'z'-free shortcuts must not fire while typing
        page.wait_for_timeout(300)
        assert store.one("SELECT COUNT(*) AS n FROM reviews")["n"] == 0
        page.get_by_role("button", name="Save correction").click()
        second = wait_for_next(page, first)
        review = store.one("SELECT * FROM reviews WHERE product_id = ?", [first])
        assert (review["decision"], review["new_label"], review["note"]) == ("correct", target, "a sad toy, as seen")

        # the next item starts empty: no label, no note (stale elements may show while the
        # page redraws; they must be gone once it has)
        wait_until_drawn(page)
        assert page.get_by_label("Note (optional)").input_value() == ""
        assert page.get_by_label("Correct to").input_value() == ""
        page.get_by_role("button", name="Save correction").click()  # Save with nothing chosen
        page.get_by_text("Choose the right category first").wait_for(timeout=30_000)
        assert store.one("SELECT COUNT(*) AS n FROM reviews")["n"] == 1

        page.evaluate("document.activeElement && document.activeElement.blur()")  # leave the field, as Tab would
        page.keyboard.press("a")  # accept
        third = wait_for_next(page, second)
        assert store.one("SELECT decision, new_label FROM reviews WHERE product_id = ?", [second]) == {
            "decision": "accept", "new_label": by_id[second].prediction.label}

        page.keyboard.press("2")  # the second suggestion
        fourth = wait_for_next(page, third)
        # the page ranks the stored probabilities, ties (two classes at ~0) in label order
        stored = store.one("SELECT fused, labels FROM predictions WHERE product_id = ?", [third])
        fused, names = json.loads(stored["fused"]), json.loads(stored["labels"])
        second_best = names[sorted(range(len(fused)), key=lambda i: -fused[i])[1]]
        assert store.one("SELECT decision, new_label FROM reviews WHERE product_id = ?", [third]) == {
            "decision": "correct", "new_label": second_best}

        page.keyboard.press("z")  # undo: the third product is back
        back = wait_for_next(page, fourth)
        assert back == third, (first, second, third, fourth, store.query("SELECT id, product_id, decision, revoked_at FROM reviews"))
        assert store.one("SELECT COUNT(*) AS n FROM settled WHERE product_id = ?", [third])["n"] == 0

        wait_until_drawn(page)  # the undone item fully drawn, as a person would see it
        page.keyboard.press("/")  # focus the picker, type, Enter picks, Enter in the note saves
        page.wait_for_function("document.activeElement && document.activeElement.closest('.st-key-correct_picker')",
                               timeout=10_000)
        wanted = next(label for label in labels if label != by_id[third].prediction.label)
        page.keyboard.type(wanted[:2])
        page.get_by_role("option", name=wanted, exact=True).wait_for(timeout=10_000)  # the list has filtered
        page.keyboard.press("Enter")
        page.wait_for_function("want => document.querySelector('.st-key-correct_picker input').value === want",
                               arg=wanted, timeout=10_000)  # and picked (typed two letters, shows the whole label)
        page.get_by_label("Note (optional)").fill("typed")
        page.get_by_label("Note (optional)").press("Enter")
        wait_for_next(page, third)
        decided = store.one("SELECT decision, note FROM settled WHERE product_id = ?", [third])
        assert decided == {"decision": "correct", "note": "typed"}
