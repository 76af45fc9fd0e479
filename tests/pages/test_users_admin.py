"""Safe user administration (issue 10, items 1 and 6).

* The Users page's "Change a user" starts from the user's current role and state, sends
  only what changed, and asks before making someone an admin (it used to show `admin` and
  "not disabled" for everybody, so disabling a reviewer made them a disabled admin).
* Nobody demotes or disables the last active admin, also when two admins demote each
  other at the same moment (the check runs inside the write transaction).
* Core re-reads the acting user: a User object made before its owner was demoted or
  disabled (an open session, a fragment rerun) cannot decide, claim, score or administer.
"""

from __future__ import annotations

import json
import threading

import pytest
from helpers.apptest import TITLES, button, errors, login, ok, open_page, titles
from helpers.apptest import store as app_store
from helpers.studio import add_predicted_product, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied, User, create_user, require_current, set_role
from core.studio.store import Store

# --------------------------------------------------------------------------- core: the last admin


def active_admins(store: Store) -> list[str]:
    return [r["username"] for r in store.query("SELECT username FROM users WHERE role = 'admin' AND disabled = 0 "
                                               "ORDER BY username")]


def test_two_admins_demoting_each_other_at_once_leave_one_admin(store):
    users = make_users(store, ("bea", "admin"))
    admin, bea = users["admin"], users["bea"]
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def demote(by: User, whom: str) -> None:
        barrier.wait()  # both requests reach set_role together, each holding a User that says admin
        try:
            set_role(store, by, whom, "viewer")
            outcomes[by.username] = "done"
        except (InputError, PermissionDenied) as exc:
            outcomes[by.username] = exc

    threads = [threading.Thread(target=demote, args=(admin, "bea")),
               threading.Thread(target=demote, args=(bea, "admin"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(active_admins(store)) == 1, outcomes
    assert sorted(v == "done" for v in outcomes.values()) == [False, True]


def test_the_last_active_admin_cannot_be_demoted_or_disabled_even_by_the_shell(store):
    users = make_users(store, ("bea", "admin"), ("rita", "reviewer"))
    system = User.system("cli")
    set_role(store, users["admin"], "bea", disabled=True)  # bea is an admin, but not an active one
    for kwargs in ({"role": "viewer"}, {"role": "reviewer"}, {"disabled": True}):
        with pytest.raises(InputError, match="last active admin"):
            set_role(store, system, "admin", **kwargs)
    assert active_admins(store) == ["admin"]
    set_role(store, system, "bea", disabled=False)  # with a second active admin it is allowed
    set_role(store, system, "admin", "viewer")
    assert active_admins(store) == ["bea"]
    # changes that keep an admin an active admin are never refused
    set_role(store, system, "bea", "admin")
    set_role(store, system, "rita", disabled=True)


def test_a_demoted_admins_old_session_cannot_administer(store):
    users = make_users(store, ("bea", "admin"), ("rita", "reviewer"))
    stale_bea = users["bea"]
    set_role(store, users["admin"], "bea", "viewer")
    with pytest.raises(PermissionDenied, match="viewer"):
        set_role(store, stale_bea, "rita", "admin")
    with pytest.raises(PermissionDenied):
        create_user(store, "mallory", "plum-kiwi-9017", "admin", by=stale_bea)
    assert store.one("SELECT role FROM users WHERE username = 'rita'")["role"] == "reviewer"
    assert store.one("SELECT 1 AS x FROM users WHERE username = 'mallory'") is None


# --------------------------------------------------------------------------- core: re-reading the user


@pytest.fixture
def stale(store):
    """(store, users, product_id, prediction_id): rita's User object made while she was a
    reviewer, then her row changed by the admin in each test."""
    users = make_users(store, ("rita", "reviewer"))
    product_id, prediction_id = add_predicted_product(store, [0.7, 0.2, 0.1], text="a kettle")
    return store, users, product_id, prediction_id


def decisions(store: Store) -> int:
    return store.one("SELECT COUNT(*) AS n FROM reviews")["n"]


@pytest.mark.parametrize("change", [{"role": "viewer"}, {"disabled": True}])
def test_a_demoted_or_disabled_reviewer_cannot_decide_claim_or_score(stale, change):
    from core.studio.batch import score_batch
    from core.studio.bulk import bulk_accept
    from core.studio.review_queue import claim_next, record_review, undo_last

    store, users, product_id, prediction_id = stale
    rita = users["rita"]
    assert claim_next(store, rita) is not None  # while she is a reviewer, she can
    set_role(store, users["admin"], "rita", change.get("role"), disabled=change.get("disabled"))
    assert rita.role == "reviewer"  # the object her open session holds still says so
    with pytest.raises(PermissionDenied):
        record_review(store, rita, product_id, "accept", prediction_id=prediction_id)
    with pytest.raises(PermissionDenied):
        claim_next(store, rita)
    with pytest.raises(PermissionDenied):
        undo_last(store, rita)
    with pytest.raises(PermissionDenied):
        bulk_accept(store, rita, [product_id], 0.5)
    with pytest.raises(PermissionDenied):  # refused before the model or the file is looked at
        score_batch(store, None, rita, None)
    assert decisions(store) == 0


def test_require_current_reads_the_row_and_lets_the_shell_user_through(stale):
    store, users, _, _ = stale
    rita = users["rita"]
    assert require_current(store, rita, "review") == rita
    set_role(store, users["admin"], "rita", "admin")
    assert require_current(store, rita, "users").role == "admin"  # a promotion applies at once too
    assert require_current(store, User.system(), "users") == User.system()
    with pytest.raises(PermissionDenied, match="no longer a user"):
        require_current(store, User(999, "ghost", "admin"), "predict")
    with pytest.raises(PermissionDenied, match="log in"):
        require_current(store, None, "predict")
    with store.transaction() as db:  # inside a caller's write transaction
        assert require_current(db, rita, "models").username == "rita"


# --------------------------------------------------------------------------- the Users page


def edit_widgets(at):
    """The "Change a user" form's role selectbox and disabled checkbox (keyed by the row)."""
    role = next(s for s in at.selectbox if (s.key or "").startswith("edit_role-"))
    disabled = next(c for c in at.checkbox if (c.key or "").startswith("edit_disabled-"))
    return role, disabled


def choose_user(at, name: str):
    at.selectbox(key="edit_username").select(name)
    return ok(at.run())


def row(name: str) -> tuple[str, int]:
    found = app_store().one("SELECT role, disabled FROM users WHERE username = ?", [name])
    return found["role"], found["disabled"]


def test_users_page_changes_only_what_the_admin_changed_and_asks_before_granting_admin(app_home):
    at = open_page(login("admin"), "users")
    assert titles(at) == [TITLES["users"]]

    # the form starts from rita's row: reviewer, enabled; disabling her keeps her a reviewer
    at = choose_user(at, "rita")
    role, disabled = edit_widgets(at)
    assert (role.value, disabled.value) == ("reviewer", False)
    disabled.check()
    button(at, "Save").click()
    at = ok(at.run())
    assert errors(at) == []
    assert row("rita") == ("reviewer", 1)
    assert [s.value for s in at.success] == ["Saved rita: disabled."]

    # victor's form says viewer; making him an admin asks first and changes nothing until "yes"
    at = choose_user(at, "victor")
    role, disabled = edit_widgets(at)
    assert (role.value, disabled.value) == ("viewer", False)
    role.select("admin")
    button(at, "Save").click()
    at = ok(at.run())
    assert row("victor") == ("viewer", 0)
    assert [w.value for w in at.warning][0].startswith("Make **victor** an admin?")
    button(at, "Yes, make victor an admin").click()
    at = ok(at.run())
    assert row("victor") == ("admin", 0)
    assert [s.value for s in at.success] == ["Saved victor: now admin."]
    assert not at.warning

    # back to rita: the form shows her as she is now (disabled); re-enabling keeps her a reviewer
    at = choose_user(at, "rita")
    role, disabled = edit_widgets(at)
    assert (role.value, disabled.value) == ("reviewer", True)
    disabled.uncheck()
    button(at, "Save").click()
    at = ok(at.run())
    assert row("rita") == ("reviewer", 0)
    audit = app_store().query("SELECT detail FROM audit WHERE action = 'user.update' ORDER BY id")
    assert [json.loads(a["detail"]) for a in audit] == [
        {"username": "rita", "disabled": 1}, {"username": "victor", "role": "admin"},
        {"username": "rita", "disabled": 0}]


def test_users_page_refuses_bad_changes_with_a_message(app_home):
    at = open_page(login("admin"), "users")

    # Save with nothing changed writes nothing
    at = choose_user(at, "victor")
    button(at, "Save").click()
    at = ok(at.run())
    assert [i.value for i in at.info] == ["Nothing to save: victor is already viewer."]

    # a grant of admin that is cancelled changes nothing
    role, _ = edit_widgets(at)
    role.select("admin")
    button(at, "Save").click()
    at = ok(at.run())
    button(at, "Cancel").click()
    at = ok(at.run())
    assert row("victor") == ("viewer", 0) and not at.warning

    # demoting or disabling yourself (the only active admin) is refused, with a message
    at = choose_user(at, "admin")
    role, disabled = edit_widgets(at)
    assert (role.value, disabled.value) == ("admin", False)
    disabled.check()
    button(at, "Save").click()
    at = ok(at.run())
    assert errors(at) == ["Could not change the user: you cannot demote or disable yourself"]
    assert row("admin") == ("admin", 0)

    # a weak password for a new user is refused, saying why
    at.text_input(key="new_username").input("nora")
    at.text_input(key="new_password").input("password123")
    button(at, "Add user").click()
    at = ok(at.run())
    assert errors(at) == ["Could not add the user: this password is one of the most common ones; choose another"]
    assert app_store().one("SELECT 1 AS x FROM users WHERE username = 'nora'") is None
    assert app_store().one("SELECT COUNT(*) AS n FROM audit WHERE action = 'user.update'")["n"] == 0


# --------------------------------------------------------------------------- the log-in form


def test_the_login_form_slows_down_guessing_and_says_how_long_to_wait(app_home):
    from core.studio.auth import FREE_FAILURES, LOCK_BASE_S

    at = None
    for _ in range(FREE_FAILURES):
        at = login("victor", "not-the-password", at=at)
        assert errors(at) == ["Wrong username or password."]
    # locked now: the right password is refused too, with the wait, and nobody is logged in
    at = login("victor", at=at)
    assert errors(at) == [f"Too many failed log-ins for this account. Try again in {int(LOCK_BASE_S)} s."]
    assert "user" not in at.session_state and titles(at) == ["Catalog Studio"]
    # the other accounts are not slowed down
    at = login("rita", at=at)
    assert errors(at) == [] and titles(at) == [TITLES["predict"]]
    audit = app_store().query("SELECT user, action FROM audit WHERE action LIKE 'login.%' ORDER BY id")
    assert audit[-2:] == [{"user": "victor", "action": "login.failed"}, {"user": "rita", "action": "login.ok"}]
