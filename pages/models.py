"""Models: how good the live model is, which versions exist, and (admins) import a
labelled catalogue, train a new version in the background, activate a version."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st

from core.studio.batch import StagedUpload, discard_upload, open_folder_csv, server_csvs, stage_upload
from core.studio.compare import compare, promote, top_confusions
from core.studio.jobs import Job, latest_job
from core.studio.label_check import start_suspects_job
from core.studio.labels import CatalogueMapping, import_staged, label_conflicts, labelled_products
from core.studio.registry import list_models, live_model
from core.studio.retrain import start_training
from pages._ui import charts
from pages._ui.flash import flash, show_flash
from pages._ui.model import load_classifier
from pages._ui.session import require_page, store
from pages._ui.widgets import friendly_errors, percent

NONE = "(none)"
IMPORT_MAPPING_KEYS = ("import_text_cols", "import_label_col", "import_level", "import_depth", "import_image_col",
                       "import_id_col", "import_name")
MAX_HEATMAP_CLASSES = 25  # more classes: the top confusions as a list instead of a heatmap
FAILED_SHOWN_MINUTES = 60  # a failed job nobody here watched: an error this long, then a quiet line

user = require_page("models")
st.title("Models")
show_flash("models")


# -- the live model ----------------------------------------------------------------------
live = live_model(store())
if live is None:
    st.info("No model yet: import a labelled catalogue below, then train.")
else:
    fused = live.split_metrics("validation")
    a, b, c, d = st.columns([2, 1, 1, 1])  # room for the whole version id
    a.metric("Live version", live.version)
    b.metric("Accuracy (validation)", percent(fused.get("accuracy")))
    c.metric("Macro-F1 (validation)", percent(fused.get("macro_f1")))
    d.metric("Validation rows", f"{fused.get('n', 0):,}")
    levels = ((live.metadata.metrics.get("validation") or {}).get("tree") or {}).get("fused", {}).get("levels")
    if levels:  # a category tree: how good each level is, and whether its confidences are honest
        st.dataframe([{"level": int(name.split("_")[1]), "classes": (live.metadata.tree or {}).get(
                           "classes_per_level", [None] * 9)[int(name.split("_")[1]) - 1],
                       "accuracy": m.get("accuracy"), "macro-F1": m.get("macro_f1"),
                       "calibration error (ECE)": (m.get("calibration") or {}).get("ece"), "rows": m.get("n")}
                      for name, m in levels.items()], hide_index=True, key="models_levels",
                     column_config={c: st.column_config.NumberColumn(format="percent")
                                    for c in ("accuracy", "macro-F1", "calibration error (ECE)")})
    f1_col, cm_col = st.columns(2)
    f1_col.plotly_chart(charts.per_class_f1_bars(fused.get("per_class_f1", {})), key="models_f1")
    matrix = fused.get("confusion_matrix", {})
    if len(matrix.get("labels", [])) > MAX_HEATMAP_CLASSES:  # a 142×142 heatmap is unreadable: list the worst
        cm_col.markdown("**Top confusions (validation)**")
        cm_col.dataframe(top_confusions(matrix), hide_index=True, key="models_top_confusions",
                         column_config={"share": st.column_config.NumberColumn("share of the true class",
                                                                               format="percent")})
    else:
        cm_col.plotly_chart(charts.confusion_heatmap(matrix.get("labels", []), matrix.get("matrix", []),
                                                     title="Confusion (validation)"), key="models_confusion")
    history = live.metadata.history or {}
    if history:
        st.plotly_chart(charts.training_curves(history, title="Training curves of the live version"),
                        key="models_curves")

# -- versions: compare, promote, roll back ---------------------------------------------------
st.subheader("Versions")
versions = list_models(store())
if versions:
    table = pd.DataFrame([{
        "version": m.version, "live": m.live, "missing": m.missing, "name": m.name,
        "created": (m.created_at or "")[:19],
        "by": m.created_by,
        "macro-F1": m.split_metrics("validation").get("macro_f1"),
        "eval slice macro-F1": m.split_metrics("eval_slice").get("macro_f1"),
    } for m in versions])
    st.dataframe(table, hide_index=True, width="stretch")
    if any(m.missing for m in versions):
        st.warning("Versions marked **missing** have no bundle where they were recorded (deleted, or replaced "
                   "by another version). They stay listed; put the folder back, or make another version live.",
                   icon=":material/folder_off:")

others = [m for m in versions if live is None or m.version != live.version]
if others:
    st.markdown("**Compare a version with the live model, then promote it (or roll back to it)**")
    choice = st.selectbox("Version", [m.version for m in others], key="compare_version")
    candidate = next(m for m in others if m.version == choice)
    comparison = None
    if live is not None:
        key = (live.version, choice)
        if st.session_state.get("comparison", (None,))[0] != key:
            st.session_state.pop("comparison", None)
            with st.spinner("Scoring both models on the same held-out products…"), \
                    friendly_errors("Cannot compare: "):
                st.session_state["comparison"] = (key, compare(
                    store(), load_classifier(live.path, live.version),
                    load_classifier(candidate.path, candidate.version)))
        comparison = st.session_state.get("comparison", (None, None))[1]
    if comparison is not None:
        delta = comparison.delta_macro_f1
        a, b, c = st.columns(3)
        a.metric("Held-out products", f"{comparison.rows:,}")
        b.metric("Accuracy", percent(comparison.candidate["accuracy"]),
                 f"{(comparison.candidate['accuracy'] - comparison.live['accuracy']) * 100:+.1f} pts vs live")
        c.metric("Macro-F1", percent(comparison.candidate["macro_f1"]),
                 None if delta is None else f"{delta * 100:+.1f} pts vs live")
        st.plotly_chart(charts.per_class_f1_bars(comparison.live["per_class_f1"], comparison.candidate["per_class_f1"],
                                                 names=("live", choice), title="F1 per class"),
                        key="compare_f1")
        st.dataframe(comparison.per_class(), hide_index=True, width="stretch")
        left, right = st.columns(2)
        for col, name, metrics in ((left, f"live {comparison.live_version}", comparison.live),
                                   (right, f"candidate {choice}", comparison.candidate)):
            cm = metrics["confusion_matrix"]
            col.plotly_chart(charts.confusion_heatmap(cm["labels"], cm["matrix"], title=name),
                             key=f"compare_cm_{name}")
        if comparison.worse:
            st.warning(f"{choice} is worse than the live model by {-delta:.3f} macro-F1 "
                       f"(tolerance {comparison.tolerance:.3f}).", icon=":material/warning:")
    confirm = comparison is not None and comparison.worse and st.checkbox(
        "I know it scores worse; promote it anyway", key="confirm_worse")
    if st.button(f"Make {choice} live", key="promote_button", type="primary"):
        with friendly_errors("Not promoted: "):
            promote(store(), user, choice, comparison=comparison, confirm_worse=bool(confirm))
            st.session_state.pop("comparison", None)
            flash("models", f"{choice} is live.")
            st.rerun()

# -- import a labelled catalogue --------------------------------------------------------
st.subheader("Import a labelled catalogue")
upload_tab, folder_tab = st.tabs(["Upload CSV + zip", "Folder on the server"])
with upload_tab:
    csv_file = st.file_uploader("Catalogue (CSV)", type=["csv"], key="import_csv")
    zip_file = st.file_uploader("Photos (zip, optional)", type=["zip"], key="import_zip")
with folder_tab:
    folder = st.text_input("Folder with a CSV (and its photos)", key="import_folder",
                           placeholder="/data/catalogues/spring")


def staged_catalogue() -> StagedUpload | None:
    """The uploaded (or server-side) CSV being mapped, staged once per file; a new file
    forgets the last file's mapping so its own guess shows."""
    if csv_file is not None:
        key: tuple = ("upload", csv_file.file_id, zip_file.file_id if zip_file else None)
    elif folder.strip():
        csvs = server_csvs(store(), user, folder)
        chosen = st.selectbox("CSV", csvs, format_func=lambda p: p.name, key="import_folder_csv")
        key = ("folder", str(chosen), chosen.stat().st_mtime if chosen.exists() else 0)
    else:
        return None
    if st.session_state.get("import_staged", (None,))[0] != key:
        discard_upload((st.session_state.pop("import_staged", None) or (None, None))[1])  # the last file's copy
        for name in IMPORT_MAPPING_KEYS:
            st.session_state.pop(name, None)
        with st.spinner("Reading the catalogue…"):
            staged = (stage_upload(csv_file.getvalue(), csv_file.name, zip_file.getvalue() if zip_file else None)
                      if key[0] == "upload" else open_folder_csv(chosen))
        st.session_state["import_staged"] = (key, staged)
    return st.session_state["import_staged"][1]


def import_message(summary, name: str) -> str:
    """What the import did, in the words of a re-import: new, updated, unchanged."""
    classes = len(summary.per_class)
    return (f"Imported “{name}”: {summary.added:,} new products"
            + (f" in {classes} categories ({summary.eval_rows:,} of them kept aside for evaluation)"
               if summary.added else "")
            + f", {summary.updated:,} updated (label changed), {summary.unchanged:,} unchanged; "
            f"{summary.unusable:,} rows skipped (no label, or neither text nor photo).")


staged = None
with friendly_errors("Cannot read the catalogue: "):
    staged = staged_catalogue()

if staged is not None:
    columns, guess = staged.columns, staged.guess
    with st.form("import_map"):
        text_cols = st.multiselect("Text columns", columns, default=guess.text, key="import_text_cols")
        label_col = st.selectbox("Label column", columns, key="import_label_col", placeholder="Choose the label column",
                                 index=columns.index(guess.label) if guess.label else None)
        level_col, depth_col = st.columns(2)
        level = level_col.number_input("One level of the category tree (0 = learn the tree)", 0, 10,
                                       guess.label_level or 0, key="import_level",
                                       help="For labels like “Home >> Bed Linen >> Bedsheets”: 0 keeps the whole "
                                            "path and the model learns every level; N keeps level N only (flat).")
        depth = depth_col.number_input("Tree depth to learn (0 = every level)", 0, 10, guess.label_depth or 0,
                                       key="import_depth",
                                       help="Paths are cut to this many levels. The guess stops where the tree's "
                                            "nodes become single products (e.g. Flipkart's product names).")
        image_col = st.selectbox("Image column", [NONE] + columns, key="import_image_col",
                                 index=columns.index(guess.image) + 1 if guess.image else 0)
        id_col = st.selectbox("Id column (re-imports update the products with the same id)", [NONE] + columns,
                              key="import_id_col", index=columns.index(guess.id) + 1 if guess.id else 0)
        name = st.text_input("Name of this catalogue", value=Path(staged.csv_path).stem, key="import_name")
        go = st.form_submit_button("Import", type="primary")
    if go:
        bar = st.progress(0.0, text="Reading the catalogue…")
        mapping = CatalogueMapping(text_cols, label_col, int(level) or None, None if image_col == NONE else image_col,
                                   None if id_col == NONE else id_col,
                                   label_depth=None if int(level) else (int(depth) or None))
        restage = (lambda: stage_upload(csv_file.getvalue(), csv_file.name, zip_file.getvalue() if zip_file else None)
                   ) if csv_file is not None else None
        with friendly_errors("Import failed, nothing was added: "):
            summary, report = import_staged(store(), user, staged, mapping, name, restage=restage,
                                            on_progress=lambda f, m: bar.progress(f, text=m))
            bar.empty()
            st.success(import_message(summary, name), icon=":material/check_circle:")
            for line in report:
                st.caption(line)

# -- train --------------------------------------------------------------------------------
st.subheader("Train a new version")
labelled = labelled_products(store())
st.caption(f"{len(labelled):,} labelled products ({int((labelled['split'] == 'eval').sum()):,} in the frozen "
           f"evaluation slice, {int(labelled['reviewed_label'].notna().sum()):,} with a reviewer's decision).")
conflicts = label_conflicts(store())
if not conflicts.empty:
    with st.expander(f"Reviewers disagreed on {len(conflicts):,} products (the latest decision is used)"):
        st.dataframe(conflicts, hide_index=True, width="stretch")
if st.button("Train from the catalogue and the corrections", key="train_button", type="primary",
             disabled=labelled.empty):
    with friendly_errors("Could not start training: "):
        start_training(store(), user)
        st.rerun()


def _minutes_since(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(stamp)).total_seconds() / 60
    except ValueError:
        return float("inf")


@st.fragment(run_every=2)
def job_status(kind: str, title: str, done: Callable[[Job], str], idle: str = "", failed: str = "") -> None:
    """Polls the job table, so progress shows in whichever browser looks; when a job this
    page watched ends, the whole page redraws (new versions, a new queue).

    A failed job's error is for the people it concerns, not forever: this session sees it
    (with a Dismiss button) when it watched the job run; anyone else sees it for
    FAILED_SHOWN_MINUTES after the failure. After that, or once dismissed, a quiet line
    says the last run failed, until the next run replaces it."""
    job = latest_job(store(), kind)
    if job is None:
        if idle:
            st.caption(idle)
        return
    if job.active:
        st.session_state[f"{kind}_watched"] = job.id
        st.progress(job.progress or 0.0, text=f"{title} #{job.id} ({job.user}): "
                                              f"{job.message or job.stage or job.state}")
        return
    if st.session_state.pop(f"{kind}_watched", None) == job.id:
        st.session_state[f"{kind}_saw_end"] = job.id
        st.rerun(scope="app")
    if job.state == "done":
        st.success(done(job))
        return
    dismissed = st.session_state.get(f"{kind}_dismissed") == job.id
    watched = st.session_state.get(f"{kind}_saw_end") == job.id
    if not dismissed and (watched or _minutes_since(job.finished_at) <= FAILED_SHOWN_MINUTES):
        reason = (job.error or "no reason recorded").rstrip(". ")
        st.error(f"{title} #{job.id} failed: {reason}.{failed}", icon=":material/error:")
        st.button("Dismiss", key=f"{kind}_dismiss", on_click=st.session_state.__setitem__,
                  args=(f"{kind}_dismissed", job.id))
    else:
        st.caption(f"The last {title.lower()} (#{job.id}, {(job.finished_at or '')[:16].replace('T', ' ')} "
                   f"UTC) failed.{failed}")


job_status("train", "Training", lambda job: f"Training #{job.id} finished: version {(job.result or {}).get('version')}. "
           "Compare it above, then promote it if it is better.", idle="No training yet.",
           failed=" The live model is unchanged.")


# -- suspected mislabels -----------------------------------------------------------------
st.subheader("Suspected mislabels")
st.caption("Confident learning on out-of-fold predictions flags catalogue items whose label the models doubt; "
           "they form their own queue on the Review page.")
if st.button("Find suspected mislabels", key="suspects_button"):
    with friendly_errors("Could not start: "):
        start_suspects_job(store(), user)
        st.rerun()


job_status("suspects", "Label check", lambda job: f"{(job.result or {}).get('flagged', 0):,} suspected mislabels "
           f"among {(job.result or {}).get('scored', 0):,} catalogue items: see Review queue → suspected mislabels.")
