"""core.studio.registry on fake bundles (metadata.json + labels.json are all it reads): register,
sync with the models folder, activate (admins only, audited), bundles that disappear."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers.studio import count, make_users

from core.common.errors import InputError
from core.models import bundle
from core.studio.auth import PermissionDenied
from core.studio.registry import activate, get_model, list_models, live_model, register_model, sync_models


def fake_bundle(folder: Path, version: str, created_at: str, accuracy: float = 0.9) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / bundle.METADATA).write_text(json.dumps({
        "version": version, "created_at": created_at,
        "metrics": {"validation": {"fused": {"accuracy": accuracy}}}}))
    (folder / bundle.LABELS).write_text(json.dumps(["Kitchen", "Toys"]))
    return folder


@pytest.fixture
def models(studio_home) -> Path:
    return studio_home / "models"


@pytest.fixture
def users(store) -> dict:
    return make_users(store, ("rev", "reviewer"))


def active_versions(store) -> list[str]:
    return [r["version"] for r in store.query("SELECT version FROM models WHERE active = 1")]


def test_no_models_folder_and_an_empty_one(store, models):
    assert sync_models(store) == [] and live_model(store) is None
    models.mkdir()
    assert sync_models(store) == [] and live_model(store) is None and list_models(store) == []


def test_sync_registers_bundles_and_activates_the_newest(store, models):
    fake_bundle(models / "a", "v-old", "2024-01-01T00:00:00+00:00", 0.7)
    fake_bundle(models / "b", "v-new", "2024-06-01T00:00:00+00:00", 0.8)
    (models / "not-a-bundle").mkdir()
    (models / "notes.txt").write_text("hello")
    assert sorted(sync_models(store)) == ["v-new", "v-old"]
    live = live_model(store)
    assert live.version == "v-new" and live.live is True
    assert live.path == str((models / "b").resolve()) and live.name == "b"
    assert live.metrics == {"validation": {"fused": {"accuracy": 0.8}}}
    assert live.metadata.created_at == "2024-06-01T00:00:00+00:00" and live.created_by == "disk"
    assert [m.version for m in list_models(store)] == ["v-new", "v-old"]
    assert get_model(store, "v-old").live is False and get_model(store, "nope") is None

    # idempotent: nothing new, the live model stays
    assert sync_models(store) == []
    assert count(store, "models") == 2 and active_versions(store) == ["v-new"]


def test_a_new_bundle_on_disk_does_not_replace_the_chosen_live_model(store, models, users):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    activate(store, users["admin"], "v1")
    fake_bundle(models / "c", "v3", "2024-03-01T00:00:00+00:00")
    assert sync_models(store) == ["v3"]
    assert active_versions(store) == ["v1"]


def test_activate_switches_requires_an_admin_and_is_audited(store, models, users):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    assert live_model(store).version == "v2"

    with pytest.raises(PermissionDenied):
        activate(store, users["rev"], "v1")
    assert live_model(store).version == "v2"

    activate(store, users["admin"], "v1")
    assert active_versions(store) == ["v1"]
    assert live_model(store).activated_at
    activate(store, users["admin"], "v2")
    assert active_versions(store) == ["v2"]
    with pytest.raises(InputError, match="no model version"):
        activate(store, users["admin"], "v9")
    rows = store.query("SELECT user, detail FROM audit WHERE action = 'model.activate' ORDER BY id")
    assert [(r["user"], json.loads(r["detail"])) for r in rows] == [
        ("admin", {"version": "v1", "previous": "v2"}), ("admin", {"version": "v2", "previous": "v1"})]


def test_activating_a_version_whose_files_are_gone_is_refused(store, models, users):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    shutil.rmtree(models / "a")
    with pytest.raises(InputError, match="gone"):
        activate(store, users["admin"], "v1")
    assert active_versions(store) == ["v2"]


def missing_versions(store) -> list[str]:
    return [m.version for m in list_models(store) if m.missing]


def test_deleting_the_live_bundle_marks_it_missing_and_keeps_it_live(store, models):
    """The registry never switches the live model by itself: before, the next-newest
    version silently became live (and the row and its history were deleted)."""
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    assert live_model(store).version == "v2" and live_model(store).missing is False
    shutil.rmtree(models / "b")
    sync_models(store)
    live = live_model(store)
    assert live.version == "v2" and live.missing is True and live.missing_at
    assert active_versions(store) == ["v2"] and missing_versions(store) == ["v2"]
    assert [m.version for m in list_models(store)] == ["v2", "v1"]  # nothing deleted
    shutil.rmtree(models / "a")
    sync_models(store)
    assert active_versions(store) == ["v2"] and missing_versions(store) == ["v2", "v1"]


def test_a_missing_bundle_that_comes_back_is_no_longer_missing(store, models):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    (models / "a").rename(models.parent / "parked")
    sync_models(store)
    assert missing_versions(store) == ["v1"] and live_model(store).version == "v2"
    (models.parent / "parked").rename(models / "a")
    sync_models(store)
    assert missing_versions(store) == [] and get_model(store, "v1").missing is False


def test_once_a_version_was_live_nothing_is_auto_activated(store, models, users):
    """Even with no usable live bundle left, a new bundle on disk does not go live."""
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    sync_models(store)
    assert active_versions(store) == ["v1"]
    shutil.rmtree(models / "a")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    assert sync_models(store) == ["v2"]
    assert active_versions(store) == ["v1"] and missing_versions(store) == ["v1"]
    with pytest.raises(InputError, match="gone"):
        activate(store, users["admin"], "v1")
    activate(store, users["admin"], "v2")  # an admin's choice
    assert active_versions(store) == ["v2"]


def test_first_sync_activates_the_newest_bundle_that_is_there(store, models, tmp_path):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    gone = register_model(store, fake_bundle(tmp_path / "gone", "v9", "2025-01-01T00:00:00+00:00"))
    shutil.rmtree(tmp_path / "gone")
    sync_models(store)
    assert gone == "v9" and missing_versions(store) == ["v9"] and active_versions(store) == ["v1"]


def test_register_activate_if_first_only_while_nothing_was_ever_live(store, tmp_path):
    first = fake_bundle(tmp_path / "m1", "v1", "2024-01-01T00:00:00+00:00")
    second = fake_bundle(tmp_path / "m2", "v2", "2024-02-01T00:00:00+00:00")
    assert register_model(store, first, activate_if_first=True) == "v1"
    assert active_versions(store) == ["v1"]
    register_model(store, second, activate_if_first=True)
    assert active_versions(store) == ["v1"]


def test_a_bundle_retrained_in_place_is_picked_up_and_the_old_version_kept(store, models):
    """`train --out models/m` (or `demo --force`) twice: the folder now holds a new version;
    the old one stays listed (missing) and stays live until an admin promotes the new one."""
    fake_bundle(models / "m", "v1", "2024-01-01T00:00:00+00:00")
    sync_models(store)
    shutil.rmtree(models / "m")
    fake_bundle(models / "m", "v2", "2024-02-01T00:00:00+00:00")
    assert sync_models(store) == ["v2"]
    assert live_model(store).version == "v1" and missing_versions(store) == ["v1"]
    assert [m.version for m in list_models(store)] == ["v2", "v1"]


def age(path: Path, seconds: float) -> None:
    """Make `path` and everything in it look `seconds` old."""
    then = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (then, then))


def test_crash_leftovers_are_never_registered_and_are_cleaned(store, models):
    """An interrupted atomic save leaves `.m.tmp-…` (being written) and `.m.old-…` (the
    replaced bundle) beside the target: before, a complete `.old` was registered as a
    version of its own (and could go live)."""
    fake_bundle(models / "m", "v2", "2024-02-01T00:00:00+00:00")
    old = fake_bundle(models / ".m.old-1a2b3c4d", "v1", "2024-01-01T00:00:00+00:00")
    tmp = fake_bundle(models / ".m.tmp-x_9Yz", "v3", "2024-03-01T00:00:00+00:00")
    fresh = fake_bundle(models / ".n.tmp-abc123", "v4", "2024-04-01T00:00:00+00:00")
    age(old, 3600)
    age(tmp, 3600)
    assert sync_models(store) == ["v2"]
    assert [m.version for m in list_models(store)] == ["v2"] and active_versions(store) == ["v2"]
    assert not old.exists() and not tmp.exists()
    assert fresh.exists()  # may be a save in progress: left alone, still not registered
    for leftover in (fresh, models / ".m.tmp-x_9Yz"):
        with pytest.raises(InputError, match="leftover|not a model"):
            register_model(store, leftover)


def test_a_crash_between_the_two_renames_puts_the_old_bundle_back(store, models):
    """Target already moved aside, new one not yet in place: the `.old` is the registered
    model, so it is restored, not deleted."""
    fake_bundle(models / "m", "v1", "2024-01-01T00:00:00+00:00")
    sync_models(store)
    (models / "m").rename(models / ".m.old-0badc0de")
    age(models / ".m.old-0badc0de", 3600)
    sync_models(store)
    assert bundle.read_metadata(models / "m").version == "v1"
    assert sorted(p.name for p in models.iterdir()) == ["m"]
    assert missing_versions(store) == [] and active_versions(store) == ["v1"]


def test_activating_a_tampered_bundle_is_refused(store, models, users):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    b = fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    bundle.write_manifest(b)
    sync_models(store)
    activate(store, users["admin"], "v1")
    (b / bundle.LABELS).write_text(json.dumps(["Kitchen", "Weapons"]))
    with pytest.raises(InputError, match="tampered"):
        activate(store, users["admin"], "v2")
    assert active_versions(store) == ["v1"]


def comparison(live: str, candidate: str):
    from core.studio.compare import Comparison

    scores = {"macro_f1": 0.9, "per_class_f1": {"Kitchen": 0.9}}
    return Comparison(live, candidate, 10, scores, scores, tolerance=0.01)


def test_promote_refuses_a_comparison_made_against_another_live_model(store, models, users):
    """Admin A compares v3 with live v1; meanwhile admin B makes v2 live. A's promotion
    must not go through on evidence about a model that is no longer live."""
    from core.studio.compare import promote

    for folder, version, month in (("a", "v1", 1), ("b", "v2", 2), ("c", "v3", 3)):
        fake_bundle(models / folder, version, f"2024-0{month}-01T00:00:00+00:00")
    sync_models(store)
    activate(store, users["admin"], "v1")
    seen_by_a = comparison("v1", "v3")
    activate(store, users["admin"], "v2")  # admin B, in another session
    with pytest.raises(InputError, match="live model changed since this comparison; compare again"):
        promote(store, users["admin"], "v3", comparison=seen_by_a)
    assert active_versions(store) == ["v2"]
    assert store.query("SELECT 1 FROM audit WHERE action = 'model.promote'") == []
    promote(store, users["admin"], "v3", comparison=comparison("v2", "v3"))
    assert active_versions(store) == ["v3"]
    promoted = store.query("SELECT detail FROM audit WHERE action = 'model.promote'")
    assert [json.loads(r["detail"])["previous"] for r in promoted] == ["v2"]


def test_a_moved_bundle_follows_its_folder(store, models):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    sync_models(store)
    (models / "a").rename(models / "renamed")
    sync_models(store)
    live = live_model(store)
    assert live.version == "v1" and live.name == "renamed"
    assert live.path == str((models / "renamed").resolve())


def test_a_broken_bundle_folder_does_not_break_sync(store, models):
    fake_bundle(models / "good", "v1", "2024-01-01T00:00:00+00:00")
    broken = models / "broken"
    broken.mkdir()
    (broken / bundle.METADATA).write_text("{not json")
    (broken / bundle.LABELS).write_text("[]")
    unversioned = fake_bundle(models / "unversioned", "", "2024-05-01T00:00:00+00:00")
    assert sync_models(store) == ["v1"]
    assert live_model(store).version == "v1"
    for path, message in ((broken, "unreadable"), (unversioned, "no version"), (models / "none", "not a model")):
        with pytest.raises(InputError, match=message):
            register_model(store, path)


def test_register_model_directly(store, tmp_path):
    outside = fake_bundle(tmp_path / "elsewhere" / "m", "v7", "2024-01-01T00:00:00+00:00")
    assert register_model(store, outside, created_by="alice") == "v7"
    assert live_model(store) is None  # registering alone does not activate
    assert register_model(store, outside, created_by="bob", activate=True) == "v7"  # idempotent
    live = live_model(store)
    assert live.version == "v7" and live.created_by == "alice" and count(store, "models") == 1
    other = fake_bundle(tmp_path / "elsewhere" / "n", "v8", "2024-02-01T00:00:00+00:00")
    register_model(store, other, activate=True)
    assert active_versions(store) == ["v8"]


def test_two_admins_promoting_at_once_one_wins_the_other_must_compare_again(store, models, users):
    """Both compared their candidate with live v1 and click at the same moment: the check
    runs inside the switching transaction, so exactly one switch lands."""
    import threading

    from core.studio.compare import promote

    for folder, version, month in (("a", "v1", 1), ("b", "v2", 2), ("c", "v3", 3)):
        fake_bundle(models / folder, version, f"2024-0{month}-01T00:00:00+00:00")
    sync_models(store)
    activate(store, users["admin"], "v1")
    outcomes: dict[str, str] = {}
    gate = threading.Barrier(2)

    def click(candidate: str) -> None:
        gate.wait()
        try:
            promote(store, users["admin"], candidate, comparison=comparison("v1", candidate))
            outcomes[candidate] = "live"
        except InputError as exc:
            outcomes[candidate] = str(exc)

    threads = [threading.Thread(target=click, args=(v,)) for v in ("v2", "v3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [v for v, outcome in outcomes.items() if outcome == "live"]
    assert len(winners) == 1 and active_versions(store) == winners
    loser = ({"v2", "v3"} - set(winners)).pop()
    assert "compare again" in outcomes[loser]


# --------------------------------------------------------------------------- the Models page


def test_models_page_flags_a_missing_version_and_refuses_to_make_it_live(app_home):
    """An admin opens the Models page after a bundle folder was deleted: the version is
    still listed, flagged missing, the live model is unchanged, and trying to make the
    missing version live says why instead of switching."""
    from helpers.apptest import errors, live_version, login, ok, open_page

    first = live_version()
    copy = app_home.home / "models" / "gone-soon"
    shutil.copytree(app_home.bundle, copy)
    meta = json.loads((copy / bundle.METADATA).read_text())
    meta["version"] = "v-gone"
    (copy / bundle.METADATA).write_text(json.dumps(meta))
    bundle.write_manifest(copy)
    from core.studio.store import Store

    store = Store()
    sync_models(store)
    shutil.rmtree(copy)  # deleted on disk: the app's start-up sync sees it gone

    at = open_page(login("admin"), "models")
    table = at.dataframe[0].value.set_index("version")
    assert table.loc["v-gone", "missing"] and not table.loc[first, "missing"]
    assert table.loc[first, "live"] and not table.loc["v-gone", "live"]
    assert any("missing" in w.value for w in at.warning)
    at.selectbox(key="compare_version").select("v-gone")
    at.button(key="promote_button").click()
    at = ok(at.run())
    assert any("gone" in e for e in errors(at)) and live_version() == first
