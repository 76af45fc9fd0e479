"""core.studio.team on a real SQLite file: per-reviewer counts, speed and agreement, and the
disagreements an admin settles with an ordinary decision."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers.studio import add_predicted_product, make_users

from core.common.errors import InputError
from core.studio.auth import PermissionDenied
from core.studio.bulk import bulk_accept
from core.studio.review_queue import DecisionConflict, change_decision, record_review
from core.studio.team import OUT_OF_SCOPE, disagreements, reviewer_stats, settle_disagreement


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rita", "reviewer"), ("bob", "reviewer"), ("victor", "viewer"))


def products(store, n: int) -> list[int]:
    """n products predicted Kitchen at 0.6 (labels Kitchen, Toys, Watches)."""
    return [add_predicted_product(store, [0.6, 0.3, 0.1], text=f"product {i}")[0] for i in range(n)]


def at_times(store, seconds: dict[int, float]) -> None:
    """Set review `id`'s created_at to `seconds` after a fixed instant (speed is measured on these)."""
    with store.transaction() as db:
        for review_id, s in seconds.items():
            db.execute("UPDATE reviews SET created_at = ? WHERE id = ?",
                       [f"2026-01-01T10:{int(s // 60):02d}:{s % 60:06.3f}+00:00", review_id])


def test_counts_speed_and_agreement_per_reviewer(store, users):
    rita, bob = users["rita"], users["bob"]
    p = products(store, 5)
    r1 = record_review(store, rita, p[0], "accept")                            # Kitchen
    r2 = record_review(store, rita, p[1], "correct", new_label="Toys")         # Toys
    r3 = record_review(store, rita, p[2], "skip")
    r4 = record_review(store, rita, p[3], "out_of_scope")
    at_times(store, {r1: 0, r2: 10, r3: 40, r4: 50})                           # gaps 10, 30, 10 → median 10
    b1 = record_review(store, bob, p[0], "accept")                             # agrees with rita on p0
    b2 = record_review(store, bob, p[1], "correct", new_label="Watches")       # disagrees on p1
    b3 = record_review(store, bob, p[3], "out_of_scope")                       # agrees on p3 (both out of scope)
    at_times(store, {b1: 100, b2: 130, b3: 190})                               # gaps 30, 60 → median 45
    undone = record_review(store, bob, p[4], "correct", new_label="Toys")
    change_decision(store, bob, undone, "accept")                              # the correction is undone

    stats = reviewer_stats(store, users["admin"]).set_index("reviewer")
    assert list(stats.index) == ["bob", "rita"]  # most decisions first (4 vs 4, then by name)
    rita_row, bob_row = stats.loc["rita"], stats.loc["bob"]
    assert (rita_row["decisions"], rita_row["accepts"], rita_row["corrections"], rita_row["skips"],
            rita_row["out_of_scope"], rita_row["undone"]) == (4, 1, 1, 1, 1, 0)
    assert rita_row["median_seconds"] == 10
    # rita's settling decisions on p0, p1, p3 each met one later decision by bob: 2 of 3 agree
    assert (rita_row["compared_with_others"], rita_row["agreement_with_others"]) == (3, pytest.approx(2 / 3))
    # against the model (Kitchen): the accept agrees, the correction does not
    assert (rita_row["compared_with_model"], rita_row["agreement_with_model"]) == (2, 0.5)
    assert (bob_row["decisions"], bob_row["accepts"], bob_row["corrections"], bob_row["undone"]) == (4, 2, 1, 1)
    assert bob_row["compared_with_others"] == 0 and pd.isna(bob_row["agreement_with_others"])
    # gaps 30, 60, then (real time) a long one and a short one to the changed decision: median still 45
    assert bob_row["median_seconds"] == 45


def test_bulk_accepts_count_but_not_for_speed_or_model_agreement(store, users):
    rita = users["rita"]
    p = products(store, 3)
    bulk_accept(store, rita, p, 0.5, "all")
    row = reviewer_stats(store, users["admin"]).set_index("reviewer").loc["rita"]
    assert (row["decisions"], row["accepts"], row["bulk"]) == (3, 3, 3)
    assert pd.isna(row["median_seconds"]) and row["compared_with_model"] == 0


def test_disagreements_are_listed_until_an_admin_settles_them(store, users):
    rita, bob, admin = users["rita"], users["bob"], users["admin"]
    p = products(store, 4)
    record_review(store, rita, p[0], "accept")
    record_review(store, bob, p[0], "correct", new_label="Toys")      # Kitchen vs Toys
    record_review(store, rita, p[1], "accept")
    record_review(store, bob, p[1], "accept")                         # agree: not listed
    record_review(store, rita, p[2], "correct", new_label="Toys")
    record_review(store, rita, p[2], "correct", new_label="Watches")  # one reviewer changing: not listed
    record_review(store, rita, p[3], "out_of_scope")
    record_review(store, bob, p[3], "accept")                         # out of scope vs Kitchen

    found = disagreements(store, admin).set_index("product_id")
    assert list(found.index) == [p[0], p[3]]
    assert found.loc[p[0], "labels"] == ["Kitchen", "Toys"]
    assert found.loc[p[0], "decisions"] == "rita: Kitchen · bob: Toys"
    assert (found.loc[p[0], "label"], found.loc[p[0], "predicted_label"]) == ("Toys", "Kitchen")
    assert found.loc[p[3], "labels"] == sorted(["Kitchen", OUT_OF_SCOPE])

    seen = int(found.loc[p[0], "latest_review_id"])
    settle_disagreement(store, admin, p[0], "Kitchen", seen_review_id=seen)  # the predicted label: an accept
    settle_disagreement(store, admin, p[3], OUT_OF_SCOPE, seen_review_id=int(found.loc[p[3], "latest_review_id"]))
    assert disagreements(store, admin).empty
    settled = {r["product_id"]: r for r in store.query("SELECT * FROM settled")}
    assert (settled[p[0]]["reviewer"], settled[p[0]]["decision"], settled[p[0]]["new_label"]) == (
        "admin", "accept", "Kitchen")
    assert settled[p[0]]["note"] == "settled a disagreement between reviewers"
    assert (settled[p[3]]["reviewer"], settled[p[3]]["decision"]) == ("admin", "out_of_scope")

    # a reviewer disagreeing again reopens it
    record_review(store, rita, p[0], "correct", new_label="Watches")
    assert disagreements(store, admin)["product_id"].tolist() == [p[0]]


def test_settling_a_stale_screen_is_refused_and_bad_labels_too(store, users):
    rita, bob, admin = users["rita"], users["bob"], users["admin"]
    p = products(store, 1)
    record_review(store, rita, p[0], "accept")
    record_review(store, bob, p[0], "correct", new_label="Toys")
    seen = int(disagreements(store, admin)["latest_review_id"].iloc[0])
    record_review(store, rita, p[0], "correct", new_label="Watches")  # after the admin looked
    with pytest.raises(DecisionConflict):
        settle_disagreement(store, admin, p[0], "Kitchen", seen_review_id=seen)
    with pytest.raises(InputError, match="not a category"):
        settle_disagreement(store, admin, p[0], "Garden")
    with pytest.raises(InputError, match="no product"):
        settle_disagreement(store, admin, 999, "Toys")
    settle_disagreement(store, admin, p[0], "Toys")
    assert store.one("SELECT new_label, reviewer FROM settled") == {"new_label": "Toys", "reviewer": "admin"}


def test_team_view_is_for_admins(store, users):
    for name in ("rita", "victor"):
        with pytest.raises(PermissionDenied):
            reviewer_stats(store, users[name])
        with pytest.raises(PermissionDenied):
            disagreements(store, users[name])
        with pytest.raises(PermissionDenied):
            settle_disagreement(store, users[name], 1, "Toys")
