"""Catalogue ingest and retraining as background jobs (admins), and their state."""

from __future__ import annotations

import codecs
from dataclasses import fields, replace

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile

from core.api.context import ApiContext, allowed, context
from core.api.schemas import ERRORS, MAX_ID, JobOut, JobStarted, TrainRequest
from core.common.errors import InputError, NotFound
from core.studio.auth import User
from core.studio.batch import stage_upload
from core.studio.jobs import Job, get_job
from core.studio.labels import CatalogueMapping, start_import
from core.studio.retrain import default_config, start_training
from core.training.trainer import TrainConfig

router = APIRouter(tags=["jobs"])


def job_out(job: Job) -> JobOut:
    result = job.result
    if isinstance(result, dict):
        result = {k: v for k, v in result.items() if k != "traceback"}  # the server's log has it
    return JobOut(id=job.id, kind=job.kind, state=job.state, stage=job.stage, progress=job.progress,
                  message=job.message, error=job.error, result=result, user=job.user, created_at=job.created_at,
                  finished_at=job.finished_at)


def _started(ctx: ApiContext, job_id: int) -> JobStarted:
    return JobStarted(job=job_out(get_job(ctx.store, job_id)), url=f"/v1/jobs/{job_id}")


def _columns(value: str | None) -> list[str] | None:
    cols = [c.strip() for c in (value or "").split(",") if c.strip()]
    return cols or None


@router.post("/v1/catalogues", response_model=JobStarted, status_code=202, responses=ERRORS,
             summary="Import a labelled catalogue (CSV + optional zip of photos); the mapping is the CLI's")
async def import_catalogue(
    csv: UploadFile = File(..., description="the catalogue CSV"),
    images: UploadFile | None = File(None, description="a zip of the photos the image column names"),
    text_cols: str = Form(..., description="text columns, comma-separated, joined in this order"),
    label_col: str = Form(..., description="label column: class names, category paths, or several columns "
                          "(one per level), comma-separated"),
    image_col: str | None = Form(None), id_col: str | None = Form(None),
    label_level: int | None = Form(None, ge=1, le=20), label_depth: int | None = Form(None, ge=1, le=20),
    name: str | None = Form(None, max_length=200), encoding: str = Form("utf-8", max_length=40),
    user: User = Depends(allowed("train")), ctx: ApiContext = Depends(context),
) -> JobStarted:
    from fastapi.concurrency import run_in_threadpool

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"encoding: unknown text encoding '{encoding}'") from None
    texts = _columns(text_cols)
    if not texts:
        raise InputError("text_cols: give at least one column name")
    mapping = CatalogueMapping(text_cols=texts, label_col=label_col.strip() or None, label_level=label_level,
                               image_col=(image_col or "").strip() or None, id_col=(id_col or "").strip() or None,
                               label_depth=label_depth)
    csv_bytes = await csv.read()
    zip_bytes = await images.read() if images is not None else None
    csv_name = csv.filename or "catalogue.csv"

    def start() -> JobStarted:
        staged = stage_upload(csv_bytes, csv_name, zip_bytes or None, encoding=encoding)
        job_id = start_import(ctx.store, user, staged, mapping, (name or "").strip() or csv_name)
        return _started(ctx, job_id)

    return await run_in_threadpool(start)


@router.post("/v1/train", response_model=JobStarted, status_code=202, responses=ERRORS,
             summary="Retrain from the catalogue plus reviewers' decisions (a new version, not made live)")
def train(body: TrainRequest | None = None, user: User = Depends(allowed("train")),
          ctx: ApiContext = Depends(context)) -> JobStarted:
    config = default_config()
    options = (body.options if body else None) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown training options: {', '.join(unknown)}")
    config = replace(config, **options)
    return _started(ctx, start_training(ctx.store, user, config))


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=ERRORS, summary="A job's state, progress, result")
def job(job_id: int = Path(..., ge=1, le=MAX_ID), user: User = Depends(allowed("train")), ctx: ApiContext = Depends(context)) -> JobOut:
    found = get_job(ctx.store, job_id)
    if found is None:
        raise NotFound(f"no job {job_id}")
    return job_out(found)
