"""The Review page through AppTest, as sequences a reviewer walks: a correction, then the
next item (nothing carried over), a pick by rank, out of scope, undo, a skip that comes
back, a late click after someone else decided, another order, and bad input."""

from __future__ import annotations

import json

import time

from helpers.apptest import button, classifier, count, errors, login, ok, open_page, png_bytes, store, user_object


def shown(at) -> int:
    heads = [m.value for m in at.markdown if m.value.startswith("**Product ")]
    assert len(heads) == 1, heads
    return int(heads[0].split()[1].rstrip("*"))


def left_caption(at) -> str:
    return next(c.value for c in at.caption if "left for you" in c.value).split(" · ")[0]


def score(texts_and_photos):
    from core.studio.scoring import score_product

    model, rita = classifier(), user_object("rita")
    return {s.product_id: s for s in (score_product(store(), model, rita, text=t, image=p)
                                      for t, p in texts_and_photos)}


def test_a_correction_never_carries_over_to_the_next_item(app_home):
    """Bug: choose "Correct to" X, type a note, Save → the next item showed X and the note,
    and its Save corrected a different product to X with the old note."""
    at = login("rita")
    by_id = score([("Acme puzzle doll blocks playset", png_bytes("Toys")),
                   ("Orion lawn shovel watch kettle mixed bag", None),
                   ("Vega ladle kettle nonstick saucepan", None)])
    at = open_page(at, "review")
    assert left_caption(at) == "**3** items left for you"

    first = shown(at)
    options = at.selectbox(key=f"review_label_{first}").options
    assert sorted(options) == sorted(set(classifier().labels) - {by_id[first].prediction.label})
    new_label = options[-1]
    at.selectbox(key=f"review_label_{first}").select(new_label)
    at.text_input(key=f"review_note_{first}").input("checked the photo")
    button(at, "Save correction").click()
    at = ok(at.run())
    review = store().one("SELECT * FROM reviews WHERE product_id = ?", [first])
    assert (review["decision"], review["new_label"], review["reviewer"], review["note"], review["old_label"]) == (
        "correct", new_label, "rita", "checked the photo", by_id[first].prediction.label)

    second = shown(at)  # the next item follows at once, with nothing pre-filled
    assert second != first and second in by_id
    assert at.selectbox(key=f"review_label_{second}").value is None
    assert at.text_input(key=f"review_note_{second}").value == ""
    assert left_caption(at) == "**2** items left for you"
    button(at, "Save correction").click()  # Save with nothing chosen: a message, nothing written
    at = ok(at.run())
    assert any("Choose the right category first" in e for e in errors(at))
    assert count("reviews") == 1 and shown(at) == second

    at.button(key="review_accept").click()
    at = ok(at.run())
    review = store().one("SELECT * FROM reviews WHERE product_id = ?", [second])
    assert (review["decision"], review["new_label"], review["note"]) == ("accept", by_id[second].prediction.label, None)

    third = shown(at)
    stored = store().one("SELECT fused, labels FROM predictions WHERE product_id = ?", [third])
    fused, names = json.loads(stored["fused"]), json.loads(stored["labels"])
    top2 = names[sorted(range(len(fused)), key=lambda i: -fused[i])[1]]  # as the page ranks them (ties: label order)
    at.button(key="review_pick_2").click()  # the second suggestion, as key 2 does
    at = ok(at.run())
    review = store().one("SELECT * FROM reviews WHERE product_id = ?", [third])
    assert (review["decision"], review["new_label"]) == ("correct", top2)
    assert [s.value for s in at.success] == ["Nothing left to review. New predictions and batches land here."]
    assert left_caption(at) == "**0** items left for you"


def test_skip_out_of_scope_and_undo(app_home):
    at = login("rita")
    by_id = score([("Acme puzzle doll blocks playset", None), ("Vega ladle kettle nonstick saucepan", None)])
    at = open_page(at, "review")
    first = shown(at)
    at.button(key="review_skip").click()
    at = ok(at.run())
    second = shown(at)
    assert second != first
    at.button(key="review_out_of_scope").click()
    at = ok(at.run())
    assert shown(at) == first  # the skipped item came back after the other
    assert any("skipped this one before" in i.value for i in at.info)
    assert store().one("SELECT decision FROM settled WHERE product_id = ?", [second])["decision"] == "out_of_scope"

    at.button(key="review_undo").click()  # undo the out-of-scope decision: that item is back
    at = ok(at.run())
    assert shown(at) == second
    assert store().one("SELECT COUNT(*) AS n FROM settled")["n"] == 0
    at.button(key="review_accept").click()
    at = ok(at.run())
    assert store().one("SELECT decision, new_label FROM settled WHERE product_id = ?", [second]) == {
        "decision": "accept", "new_label": by_id[second].prediction.label}


def test_a_late_click_after_someone_else_decided_writes_nothing(app_home):
    at = login("rita")
    score([("Acme puzzle doll blocks playset", None), ("Vega ladle kettle nonstick saucepan", None)])
    at = open_page(at, "review")
    first = shown(at)
    # rita's claim expires while she looks away; the admin takes the item and corrects it
    with store().transaction() as db:
        db.execute("UPDATE claims SET expires_at = ?", [time.time() - 1])
    from core.studio.review_queue import claim_next, record_review

    admin = user_object("admin")
    item = claim_next(store(), admin)
    assert item.product_id == first
    record_review(store(), admin, first, "correct", new_label=item.labels[-1], seen_review_id=item.seen_review_id)

    at.button(key="review_accept").click()  # rita's stale screen
    at = ok(at.run())
    assert [r["reviewer"] for r in store().query("SELECT reviewer FROM reviews WHERE product_id = ?", [first])] == [
        "admin"]
    assert any("someone decided meanwhile" in w.value for w in at.warning)
    assert shown(at) != first  # and she moves on to the next item


def test_changing_the_order_releases_the_claim_and_shows_that_orders_item(app_home):
    at = login("rita")
    score([("Acme puzzle doll blocks playset", png_bytes("Watches")), ("Vega ladle kettle nonstick saucepan", None),
           ("Orion lawn shovel watch kettle mixed bag", None)])
    at = open_page(at, "review")
    first = shown(at)
    at.segmented_control(key="queue_order").set_value("suspects")
    at = ok(at.run())
    assert store().query("SELECT product_id FROM claims") == []  # the item went back
    assert any("Find suspected mislabels" in i.value for i in at.info)  # no label check yet
    at.segmented_control(key="queue_order").set_value("disagreement")
    at = ok(at.run())
    expected = store().one("SELECT product_id FROM predictions ORDER BY disagree DESC, confidence ASC, id ASC")
    assert shown(at) == expected["product_id"]
    assert store().query("SELECT product_id FROM claims") == [{"product_id": expected["product_id"]}]
    assert first in (expected["product_id"], first)


def test_a_viewer_suggestion_is_shown_to_the_reviewer(app_home):
    from core.studio.review_queue import record_feedback
    from core.studio.scoring import score_product

    victor = user_object("victor")
    at = login("rita")
    scored = score_product(store(), classifier(), victor, text="Acme puzzle doll blocks playset")
    wrong = next(label for label in scored.prediction.labels if label != scored.prediction.label)
    assert record_feedback(store(), victor, scored.product_id, correct_label=wrong, note="see the box").suggestion
    at = open_page(at, "review")
    assert shown(at) == scored.product_id
    assert any(f"suggests **{wrong}**" in i.value and "see the box" in i.value for i in at.info)


def open_my_decisions(at):
    at.switch_page("pages/my_decisions.py")
    return ok(at.run())


def test_my_decisions_search_change_and_undo(app_home):
    from core.studio.review_queue import claim_next, record_review

    at = login("rita")
    by_id = score([("Acme puzzle doll blocks playset", None), ("Vega ladle kettle nonstick saucepan", None)])
    rita = user_object("rita")
    for _ in by_id:
        item = claim_next(store(), rita)
        record_review(store(), rita, item.product_id, "accept", seen_review_id=item.seen_review_id)

    at = open_my_decisions(at)
    table = at.dataframe[0].value
    assert len(table) == 2 and set(table["decision"]) == {"Accept"}
    at.text_input(key="decisions_search").input("ladle")
    at = ok(at.run())
    table = at.dataframe[0].value
    assert len(table) == 1 and "ladle" in table.iloc[0]["text"]
    product = int(table.iloc[0]["product_id"])
    review_id = int(table.iloc[0]["review_id"])

    # select the row (what a click on it does), then change it to a correction
    at.session_state["decisions_table"] = {"selection": {"rows": [0], "columns": []}}
    at = ok(at.run())
    label = next(c for c in at.selectbox(key=f"change_label_{review_id}").options
                 if c != by_id[product].prediction.label)
    button(at, "Save the change").click()  # Correct with no category: a message, nothing written
    at = ok(at.run())
    assert any("Choose the category" in e for e in errors(at))
    assert store().one("SELECT COUNT(*) AS n FROM reviews WHERE revoked_at IS NOT NULL")["n"] == 0
    at.selectbox(key=f"change_label_{review_id}").select(label)
    at.text_input(key=f"change_note_{review_id}").input("it is a saucepan set")
    button(at, "Save the change").click()
    at = ok(at.run())
    assert store().one("SELECT decision, new_label, replaces FROM settled WHERE product_id = ?", [product]) == {
        "decision": "correct", "new_label": label, "replaces": review_id}
    assert store().one("SELECT action FROM audit WHERE action = 'review.change'") is not None

    button(at, "Undo my last decision").click()  # the change itself is the last decision
    at = ok(at.run())
    assert store().one("SELECT COUNT(*) AS n FROM settled WHERE product_id = ?", [product])["n"] == 0
    assert claim_next(store(), rita).product_id == product  # back in her queue


def test_my_decisions_when_there_are_none(app_home):
    at = open_my_decisions(login("rita"))
    assert any("not decided anything yet" in i.value for i in at.info)
    at.text_input(key="decisions_search").input("%' OR 1=1 --")  # hostile search is just text
    at = ok(at.run())
    assert any("No decision matches" in i.value for i in at.info)
