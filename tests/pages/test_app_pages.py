"""The Streamlit app through streamlit.testing.v1.AppTest: log-in, navigation by role,
session expiry, and every page as each role, against a real tiny model (fixture
`app_home`) and the real SQLite store.

AppTest runs the app in this process: see tests/conftest.py `fresh_streamlit_process`.
"""

from __future__ import annotations

import json
import time

import pytest
from helpers.app_home import PASSWORDS, ROLES
from helpers.apptest import (
    ALLOWED,
    APP,
    NO_ACCESS,
    PAGES,
    TITLES,
    button,
    catalogue_upload,
    classifier,
    count,
    errors,
    in_navigation,
    live_version,
    login,
    new_app,
    ok,
    open_page,
    plotly_keys,
    png_bytes,
    run_page_directly,
    second_bundle,
    shows_login_form,
    sidebar_text,
    store,
    titles,
    user_object,
)
from streamlit.testing.v1 import AppTest

# --------------------------------------------------------------------------- log-in


def test_wrong_password_shows_an_error_and_no_pages(app_home):
    at = login("victor", "not-the-password")
    assert errors(at) == ["Wrong username or password."]
    assert shows_login_form(at)
    assert "user" not in at.session_state
    assert not [b for b in at.sidebar.button if b.key == "logout"]
    for page in PAGES.values():
        assert not in_navigation(at, page), page
    at = login("nobody", "whatever-1", at=at)
    assert errors(at) == ["Wrong username or password."] and "user" not in at.session_state
    assert store().one("SELECT COUNT(*) AS n FROM audit WHERE action = 'login.failed'")["n"] == 2


@pytest.mark.parametrize("username", ["admin", "rita", "victor"])
def test_each_role_logs_in_and_sees_exactly_its_pages(app_home, username):
    role = ROLES[username]
    at = login(username)
    assert errors(at) == []
    assert at.session_state["user"].username == username and at.session_state["user"].role == role
    assert titles(at) == [TITLES["predict"]]  # the default page
    assert f"**{username}** · {role}" in sidebar_text(at)
    assert f"Live model **{live_version()}**" in sidebar_text(at)

    for name, path in PAGES.items():
        if name in ALLOWED[username]:
            assert in_navigation(at, path), name
            ok(at.run())
            assert titles(at)[:1] == [TITLES[name]], (name, titles(at))
            assert NO_ACCESS not in errors(at)
            assert f"**{username}** · {role}" in sidebar_text(at)  # the app shell ran too
        else:
            assert not in_navigation(at, path), name
            forced = run_page_directly(name, username)
            assert errors(forced) == [NO_ACCESS], (name, errors(forced))
            assert titles(forced) == [] and not forced.button and not forced.file_uploader, name


def test_log_out_and_session_expiry_return_to_the_login_form(app_home, monkeypatch):
    at = login("rita")
    assert titles(at) == [TITLES["predict"]]
    at.sidebar.button(key="logout").click()
    at = ok(at.run())
    assert shows_login_form(at)
    assert [i.value for i in at.info] == ["You are logged out."]
    assert "user" not in at.session_state
    assert not in_navigation(at, PAGES["review"])

    # idle for longer than the default 60 minutes
    at = login("victor", at=at)
    assert titles(at) == [TITLES["predict"]]
    at = ok(at.run())  # still in while active
    assert titles(at) == [TITLES["predict"]]
    at.session_state["last_seen"] = time.time() - 2 * 3600
    at = ok(at.run())
    assert shows_login_form(at)
    assert [i.value for i in at.info] == ["Your session expired; please log in again."]
    assert "user" not in at.session_state
    assert not in_navigation(at, PAGES["predict"])

    # STUDIO_SESSION_IDLE_MINUTES is read on every run
    at = login("victor", at=at)
    assert titles(at) == [TITLES["predict"]]
    monkeypatch.setenv("STUDIO_SESSION_IDLE_MINUTES", "0.001")  # 60 ms
    time.sleep(0.2)
    at = ok(at.run())
    assert shows_login_form(at)
    assert [i.value for i in at.info] == ["Your session expired; please log in again."]


def test_role_change_and_disabling_apply_at_once(app_home):
    from core.studio.auth import set_role

    at = login("rita")
    open_page(at, "review")
    assert titles(at) == [TITLES["review"]]
    set_role(store(), user_object("admin"), "rita", "viewer")
    at = ok(at.run())
    assert at.session_state["user"].role == "viewer"
    assert titles(at) == [TITLES["predict"]]  # the review page is gone from her navigation
    assert not in_navigation(at, PAGES["review"]) and not in_navigation(at, PAGES["batch"])
    set_role(store(), user_object("admin"), "rita", disabled=True)
    at = ok(at.run())
    assert shows_login_form(at)
    assert [i.value for i in at.info] == ["Your account is disabled."]


# --------------------------------------------------------------------------- predict


def test_predict_classifies_an_upload_and_records_feedback(app_home):
    at = login("victor")
    at.file_uploader(key="predict_photo").upload("watch.png", png_bytes("Watches"), "image/png")
    at.text_area(key="predict_text").input("Acme watch dial strap with wrist chronograph finish")
    button(at, "Classify").click()
    at = ok(at.run())

    assert errors(at) == []
    assert {"predict_probabilities", "predict_modality", "predict_gradcam"} <= plotly_keys(at)
    rows = store().query("SELECT p.*, pr.created_by, pr.image_hash, pr.text FROM predictions p "
                         "JOIN products pr ON pr.id = p.product_id")
    assert len(rows) == 1
    pred = rows[0]
    assert pred["user"] == "victor" and pred["created_by"] == "victor"
    assert pred["image_hash"] is not None and "watch dial strap" in pred["text"]
    assert pred["model_version"] == live_version()
    assert pred["label"] == "Watches"
    assert at.subheader[0].value.startswith("Watches · ")
    assert count("images") == 1

    # a viewer's "No, the right category is" is a suggestion for the reviewers, not a label
    pid = pred["product_id"]
    assert at.button(key=f"feedback_correct_{pid}").disabled
    assert at.button(key=f"feedback_correct_{pid}").label == "Suggest this category"
    assert at.selectbox(key=f"feedback_label_{pid}").options == ["Kitchen", "Toys"]
    at.selectbox(key=f"feedback_label_{pid}").select("Toys")
    at = ok(at.run())
    at.button(key=f"feedback_correct_{pid}").click()
    at = ok(at.run())
    reviews = store().query("SELECT * FROM reviews")
    assert len(reviews) == 1
    assert {k: reviews[0][k] for k in (
        "product_id", "prediction_id", "reviewer", "decision", "old_label", "new_label")} == {
        "product_id": pid, "prediction_id": pred["id"], "reviewer": "victor",
        "decision": "suggest", "old_label": "Watches", "new_label": "Toys"}
    assert [s.value for s in at.success] == ["Sent to the reviewers: you suggest Toys."]
    assert not [b for b in at.button if b.key.startswith("feedback_")]
    from core.studio.labels import labelled_products

    assert labelled_products(store()).empty  # never a training label

    # a second product, accepted
    at.file_uploader(key="predict_photo").clear()
    at.text_area(key="predict_text").input("Zenith skillet cookware with ladle and nonstick kettle")
    button(at, "Classify").click()
    at = ok(at.run())
    second = store().one("SELECT * FROM predictions ORDER BY id DESC LIMIT 1")
    assert count("predictions") == 2 and second["user"] == "victor" and second["id"] != pred["id"]
    assert store().one("SELECT image_hash FROM products WHERE id = ?", [second["product_id"]])["image_hash"] is None
    assert "predict_probabilities" in plotly_keys(at)
    accept = at.button(key=f"feedback_accept_{second['product_id']}")
    assert accept.label == f"Yes, it is {second['label']}"
    accept.click()
    at = ok(at.run())
    accepted = store().one("SELECT * FROM reviews WHERE product_id = ?", [second["product_id"]])
    assert (accepted["decision"], accepted["new_label"], accepted["reviewer"]) == ("suggest", second["label"], "victor")
    assert [s.value for s in at.success] == [f"Sent to the reviewers: {second['label']} looks right to you."]


def test_a_reviewers_answer_on_predict_is_a_decision(app_home):
    at = login("rita")
    at.text_area(key="predict_text").input("Acme watch dial strap with wrist chronograph finish")
    button(at, "Classify").click()
    at = ok(at.run())
    pred = store().one("SELECT * FROM predictions")
    wrong = next(label for label in json.loads(pred["labels"]) if label != pred["label"])
    at.selectbox(key=f"feedback_label_{pred['product_id']}").select(wrong)
    at = ok(at.run())
    at.button(key=f"feedback_correct_{pred['product_id']}").click()
    at = ok(at.run())
    review = store().one("SELECT decision, new_label FROM reviews")
    assert review == {"decision": "correct", "new_label": wrong}
    assert [s.value for s in at.success] == [f"Saved: corrected to {wrong}."]


def test_predict_bad_input_shows_a_message_and_writes_nothing(app_home):
    at = login("victor")
    button(at, "Classify").click()
    at = ok(at.run())
    assert errors(at) == ["Could not classify: give a description, a photo, or both"]
    assert "predict_probabilities" not in plotly_keys(at)
    assert (count("products"), count("predictions")) == (0, 0)

    at.file_uploader(key="predict_photo").upload("x.png", b"not an image", "image/png")
    at.text_area(key="predict_text").input("Acme watch dial strap")
    button(at, "Classify").click()
    at = ok(at.run())
    assert len(errors(at)) == 1 and errors(at)[0].startswith("Could not classify: ")
    assert "image" in errors(at)[0].lower()
    assert "predict_probabilities" not in plotly_keys(at)
    assert (count("products"), count("predictions"), count("images")) == (0, 0, 0)
    assert not list((app_home.home / "data").rglob("*.png"))


# --------------------------------------------------------------------------- review


# --------------------------------------------------------------------------- batch


def test_batch_scores_a_csv_with_photos(app_home, tmp_path):
    csv_bytes, zip_bytes, usable = catalogue_upload(tmp_path)
    at = open_page(login("rita"), "batch")
    at.file_uploader(key="batch_csv").upload("products.csv", csv_bytes, "text/csv")
    at.file_uploader(key="batch_zip").upload("photos.zip", zip_bytes, "application/zip")
    at = ok(at.run())
    assert errors(at) == []
    assert at.multiselect(key="batch_text_cols").value == ["title", "description"]
    assert at.selectbox(key="batch_image_col").value == "image"
    button(at, "Score the batch").click()
    at = ok(at.run())

    assert errors(at) == []
    assert len(at.dataframe) == 1
    frame = at.dataframe[0].value
    assert len(frame) == usable + 1  # one row per CSV row, the unusable one included
    assert count("predictions") == usable and count("products") == usable
    rows = store().query("SELECT p.user, pr.image_hash, pr.created_by FROM predictions p "
                         "JOIN products pr ON pr.id = p.product_id")
    assert {r["user"] for r in rows} == {"rita"} and all(r["image_hash"] for r in rows)
    assert count("images") == usable
    assert at.success[0].value.startswith(f"Scored {usable:,} products (1 rows skipped)")
    assert at.download_button(key="batch_download") is not None
    # everything scored is in the review queue
    from core.studio.review_queue import pending_count

    assert pending_count(store(), user_object("rita")) == usable


def test_batch_bad_csv_shows_a_message(app_home):
    at = open_page(login("rita"), "batch")
    at.file_uploader(key="batch_csv").upload("empty.csv", b"", "text/csv")
    at = ok(at.run())
    assert errors(at) == ["Cannot read the upload: empty.csv: file is empty (no rows)"]
    assert not [b for b in at.button if b.label == "Score the batch"]

    at.file_uploader(key="batch_csv").clear()
    at = ok(at.run())
    at.file_uploader(key="batch_csv").upload("header.csv", b"title,description,image\n", "text/csv")
    at = ok(at.run())
    assert errors(at) == ["Cannot read the upload: header.csv: no rows (only a header)"]

    at.file_uploader(key="batch_csv").clear()
    at = ok(at.run())
    at.file_uploader(key="batch_csv").upload("garbage.csv", bytes(range(256)) * 4, "text/csv")
    at = ok(at.run())
    assert len(errors(at)) == 1 and errors(at)[0].startswith("Cannot read the upload: garbage.csv: cannot decode")
    at.selectbox(key="batch_encoding").select("latin-1")
    at = ok(at.run())
    assert len(errors(at)) == 1 and errors(at)[0].startswith("Cannot read the upload: garbage.csv: malformed CSV")

    # rows that can be read, but none of them usable: refused when scoring
    at.file_uploader(key="batch_csv").clear()
    at.selectbox(key="batch_encoding").select("utf-8")
    at = ok(at.run())
    at.file_uploader(key="batch_csv").upload("nothing.csv", b"title,description,image\n,,gone.png\n,,\n",
                                             "text/csv")
    at = ok(at.run())
    assert errors(at) == []
    button(at, "Score the batch").click()
    at = ok(at.run())
    assert len(errors(at)) == 1 and errors(at)[0].startswith("Cannot score this batch: "), errors(at)
    assert "no row has a description or a usable image" in errors(at)[0]
    assert count("predictions") == 0 and count("products") == 0
    assert not at.dataframe


# --------------------------------------------------------------------------- models and users


def test_models_page_shows_metrics_promotes_and_rolls_back(app_home):
    first = live_version()
    other = second_bundle(app_home)  # registered by the app's start-up sync
    at = open_page(login("admin"), "models")
    assert titles(at) == [TITLES["models"]]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Live version"] == first
    assert metrics["Accuracy (validation)"].endswith("%") and metrics["Macro-F1 (validation)"].endswith("%")
    assert {"models_f1", "models_confusion"} <= plotly_keys(at)
    table = at.dataframe[0].value
    assert set(table["version"]) == {first, other}
    assert table.set_index("version")["live"].to_dict() == {first: True, other: False}
    # the other version is offered for comparison; with no catalogue imported there is nothing held out
    assert at.selectbox(key="compare_version").options == [other]
    assert errors(at) == ["Cannot compare: no held-out products to compare on: import a labelled catalogue (its "
                          "evaluation slice is frozen at import) or review some products"]
    at.button(key="promote_button").click()
    at = ok(at.run())
    assert live_version() == other
    assert f"Live model **{other}**" in sidebar_text(at)
    assert {m.label: m.value for m in at.metric}["Live version"] == other
    audit = store().one("SELECT * FROM audit WHERE action = 'model.activate'")
    assert audit["user"] == "admin" and json.loads(audit["detail"]) == {"version": other, "previous": first}
    promoted = store().one("SELECT * FROM audit WHERE action = 'model.promote'")
    assert json.loads(promoted["detail"])["previous"] == first

    # rollback: the first version is now the one offered, one click makes it live again
    assert at.selectbox(key="compare_version").options == [first]
    at.button(key="promote_button").click()
    at = ok(at.run())
    assert live_version() == first
    at.selectbox(key="compare_version").select(other)
    at.button(key="promote_button").click()
    at = ok(at.run())
    assert live_version() == other

    # the Predict page now uses the activated version
    at = open_page(at, "predict")
    at.text_area(key="predict_text").input("Acme watch dial strap")
    button(at, "Classify").click()
    at = ok(at.run())
    assert store().one("SELECT model_version FROM predictions")["model_version"] == other


def test_admin_adds_a_user_who_must_choose_a_password(app_home):
    at = open_page(login("admin"), "users")
    assert titles(at) == [TITLES["users"]]
    assert set(at.dataframe[0].value["username"]) == {"admin", "rita", "victor"}
    at.text_input(key="new_username").input("nora")
    at.text_input(key="new_password").input("garden-gate-41")
    at.selectbox(key="new_role").select("viewer")
    button(at, "Add user").click()
    at = ok(at.run())
    assert errors(at) == []
    assert [s.value for s in at.success] == ["Added nora (viewer)."]
    row = store().one("SELECT * FROM users WHERE username = 'nora'")
    assert (row["role"], row["must_change_password"], row["created_by"], row["disabled"]) == ("viewer", 1, "admin", 0)

    # a taken name is refused with a message
    at.text_input(key="new_username").input("nora")
    at.text_input(key="new_password").input("other-pass-1")
    button(at, "Add user").click()
    at = ok(at.run())
    assert errors(at) == ["Could not add the user: the username 'nora' is taken"]
    assert count("users") == 4

    # the new user logs in and has to choose a password first
    at = login("nora", "garden-gate-41")
    assert titles(at) == ["Choose a new password"]
    assert not in_navigation(at, PAGES["predict"])
    old, new, again = at.text_input
    old.input("garden-gate-41")
    new.input("garden-gate-42")
    again.input("garden-gate-42")
    button(at, "Save password").click()
    at = ok(at.run())
    assert titles(at) == [TITLES["predict"]]
    assert not in_navigation(at, PAGES["users"])
    assert store().one("SELECT must_change_password FROM users WHERE username = 'nora'")["must_change_password"] == 0


def test_a_viewer_forced_onto_batch_or_users_can_do_nothing(app_home):
    """Both pages are absent from a viewer's navigation (test_each_role_...); forced,
    they show the access error before any widget, and nothing is written."""
    forced = run_page_directly("batch", "victor")
    assert errors(forced) == [NO_ACCESS]
    assert not forced.file_uploader and not forced.button and not forced.dataframe
    forced = run_page_directly("users", "victor")
    assert errors(forced) == [NO_ACCESS]
    assert not forced.text_input and not forced.dataframe and not forced.button
    assert (count("predictions"), count("products"), count("users")) == (0, 0, 3)


# --------------------------------------------------------------------------- monitor


def test_monitor_renders_for_a_viewer_with_and_without_data(app_home):
    at = open_page(login("victor"), "monitor")
    assert titles(at) == [TITLES["monitor"]]
    charts = {"monitor_daily", "monitor_confidence", "monitor_corrections", "monitor_confusion",
              "monitor_disagreement", "monitor_distribution"}
    assert charts <= plotly_keys(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Predictions"] == "0" and metrics["Reviewed"] == "0" and metrics["Correction rate"] == "–"

    from core.studio.review_queue import record_review
    from core.studio.scoring import score_product

    model = classifier()
    victor, rita = user_object("victor"), user_object("rita")
    a = score_product(store(), model, victor, text="Acme watch dial strap", image=png_bytes("Watches"))
    score_product(store(), model, victor, text="Zenith skillet ladle kettle")
    new_label = next(label for label in model.labels if label != a.prediction.label)
    record_review(store(), rita, a.product_id, "correct", new_label=new_label, prediction_id=a.prediction_id)

    at = ok(at.run())
    assert charts <= plotly_keys(at)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Predictions"], metrics["Reviewed"], metrics["Waiting for review"]) == ("2", "1", "1")
    assert metrics["Correction rate"] == "100%"
    for days in (7, 365):
        at.segmented_control(key="monitor_days").set_value(days)
        at = ok(at.run())
        assert charts <= plotly_keys(at)


def test_script_runs_leave_keras_state_alone(app_home):
    """Streamlit clears Keras' session after every script run unless the app stops it;
    that would make each prediction retrace its graphs and reset layer naming mid-training."""
    import keras

    first, second = keras.layers.Dense(1).name, keras.layers.Dense(1).name
    ok(AppTest.from_file(str(APP), default_timeout=120).run())
    assert keras.layers.Dense(1).name not in (first, second, "dense")


def test_models_page_lists_products_reviewers_disagreed_on(app_home):
    from helpers.app_home import import_catalogue_into

    from core.studio.auth import authenticate
    from core.studio.review_queue import record_review

    import_catalogue_into(app_home)
    product = store().one("SELECT id, true_label FROM products ORDER BY id LIMIT 1")
    others = [c for c in ("Watches", "Kitchen", "Toys") if c != product["true_label"]]
    for name, label in (("rita", others[0]), ("admin", others[1])):
        record_review(store(), authenticate(store(), name, PASSWORDS[name]), product["id"], "correct",
                      new_label=label)
    at = open_page(login("admin"), "models")
    assert [e.label for e in at.expander] == ["Reviewers disagreed on 1 products (the latest decision is used)"]
    table = at.expander[0].dataframe[0].value
    assert table["product_id"].tolist() == [product["id"]]
    assert table["decisions"][0] == f"rita: {others[0]}; admin: {others[1]}"


def test_a_weak_admin_password_from_the_environment_is_a_message_not_a_traceback(studio_home, monkeypatch):
    monkeypatch.setenv("STUDIO_ADMIN_USER", "boss")
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "password")
    at = ok(new_app().run())
    assert any("first admin could not be created" in e for e in errors(at))
    assert count("users") == 0
