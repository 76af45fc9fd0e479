"""core.registry on fake bundles (metadata.json + labels.json are all it reads): register,
sync with the models folder, activate (admins only, audited), bundles that disappear."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core import bundle
from core.auth import PermissionDenied
from core.errors import InputError
from core.registry import activate, get_model, list_models, live_model, register_model, sync_models
from studio_helpers import count, make_users


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
    assert live["version"] == "v-new" and live["active"] is True
    assert live["path"] == str((models / "b").resolve()) and live["name"] == "b"
    assert live["metrics"] == {"validation": {"fused": {"accuracy": 0.8}}}
    assert live["metadata"]["created_at"] == "2024-06-01T00:00:00+00:00" and live["created_by"] == "disk"
    assert [m["version"] for m in list_models(store)] == ["v-new", "v-old"]
    assert get_model(store, "v-old")["active"] is False and get_model(store, "nope") is None

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
    assert live_model(store)["version"] == "v2"

    with pytest.raises(PermissionDenied):
        activate(store, users["rev"], "v1")
    assert live_model(store)["version"] == "v2"

    activate(store, users["admin"], "v1")
    assert active_versions(store) == ["v1"]
    assert live_model(store)["activated_at"]
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


def test_deleting_the_live_bundle_takes_it_out_at_the_next_sync(store, models):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    assert live_model(store)["version"] == "v2"
    shutil.rmtree(models / "b")
    sync_models(store)
    assert live_model(store)["version"] == "v1"
    assert get_model(store, "v2") is None and [m["version"] for m in list_models(store)] == ["v1"]
    shutil.rmtree(models / "a")
    sync_models(store)
    assert live_model(store) is None and list_models(store) == []


def test_deleting_an_inactive_bundle_removes_it(store, models):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    fake_bundle(models / "b", "v2", "2024-02-01T00:00:00+00:00")
    sync_models(store)
    shutil.rmtree(models / "a")
    sync_models(store)
    assert [m["version"] for m in list_models(store)] == ["v2"] and live_model(store)["version"] == "v2"


def test_a_bundle_retrained_in_place_is_picked_up(store, models):
    """`train --out models/m` (or `demo --force`) twice: the folder now holds a new version."""
    fake_bundle(models / "m", "v1", "2024-01-01T00:00:00+00:00")
    sync_models(store)
    shutil.rmtree(models / "m")
    fake_bundle(models / "m", "v2", "2024-02-01T00:00:00+00:00")
    assert sync_models(store) == ["v2"]
    assert live_model(store)["version"] == "v2"
    assert [m["version"] for m in list_models(store)] == ["v2"]


def test_a_moved_bundle_follows_its_folder(store, models):
    fake_bundle(models / "a", "v1", "2024-01-01T00:00:00+00:00")
    sync_models(store)
    (models / "a").rename(models / "renamed")
    sync_models(store)
    live = live_model(store)
    assert live["version"] == "v1" and live["name"] == "renamed"
    assert live["path"] == str((models / "renamed").resolve())


def test_a_broken_bundle_folder_does_not_break_sync(store, models):
    fake_bundle(models / "good", "v1", "2024-01-01T00:00:00+00:00")
    broken = models / "broken"
    broken.mkdir()
    (broken / bundle.METADATA).write_text("{not json")
    (broken / bundle.LABELS).write_text("[]")
    unversioned = fake_bundle(models / "unversioned", "", "2024-05-01T00:00:00+00:00")
    assert sync_models(store) == ["v1"]
    assert live_model(store)["version"] == "v1"
    for path, message in ((broken, "unreadable"), (unversioned, "no version"), (models / "none", "not a model")):
        with pytest.raises(InputError, match=message):
            register_model(store, path)


def test_register_model_directly(store, tmp_path):
    outside = fake_bundle(tmp_path / "elsewhere" / "m", "v7", "2024-01-01T00:00:00+00:00")
    assert register_model(store, outside, created_by="alice") == "v7"
    assert live_model(store) is None  # registering alone does not activate
    assert register_model(store, outside, created_by="bob", activate=True) == "v7"  # idempotent
    live = live_model(store)
    assert live["version"] == "v7" and live["created_by"] == "alice" and count(store, "models") == 1
    other = fake_bundle(tmp_path / "elsewhere" / "n", "v8", "2024-02-01T00:00:00+00:00")
    register_model(store, other, activate=True)
    assert active_versions(store) == ["v8"]
