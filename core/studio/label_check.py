"""Label check: run the suspect-label algorithm (core.training.suspects) over the imported
catalogue as a job, and keep its ranking in the `suspects` table that feeds the review queue."""

from __future__ import annotations

from core.common.errors import InputError
from core.studio.jobs import start_job
from core.studio.labels import as_catalogue, labelled_products
from core.studio.store import to_json, utc_now
from core.training.suspects import find_suspects


def store_work(context, params: dict) -> dict:
    """The suspects job's work (run in a worker process by core.studio.jobs): rank the imported
    catalogue and replace the suspects table."""
    store = context.store
    frame = labelled_products(store)
    frame = frame[frame["source"].fillna("").str.startswith("catalogue:")].reset_index(drop=True)
    if frame.empty:
        raise InputError("no imported catalogue to check: import a labelled catalogue first")
    catalogue = as_catalogue(frame, "catalogue")
    result = find_suspects(catalogue, weights=params.get("weights", "imagenet"),
                           on_progress=lambda f, m: context.progress(0.9 * f, "suspects", m))
    stamp = utc_now()
    with store.transaction() as db:
        db.execute("DELETE FROM suspects")
        db["suspects"].insert_all({
            "product_id": int(frame["id"][i]), "score": float(result.score[k]),
            "given_label": result.labels[result.given[k]], "suggested_label": result.labels[int(result.probs[k].argmax())],
            "flagged": int(result.flagged[k]), "labels": to_json(result.labels),
            "probs": to_json([round(float(v), 6) for v in result.probs[k]]), "job_id": context.job_id,
            "text_label": result.own_opinion(k)[0], "image_label": result.own_opinion(k)[1],
            "created_at": stamp} for k, i in enumerate(result.rows))
    return {"scored": len(result.rows), "flagged": int(result.flagged.sum())}


def start_suspects_job(store, user, *, background: bool = True, weights: str | None = "imagenet") -> int:
    """Rank the imported catalogue's labels (a job; results feed the review queue)."""
    return start_job(store, user, store_work, {"weights": weights}, kind="suspects", background=background,
                     process=True)
