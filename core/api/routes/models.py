"""The model registry: list, read, promote (compare first, as the Models page does)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends

from core.api.context import ApiContext, allowed, context
from core.api.schemas import ERRORS, ModelDetail, ModelList, ModelSummary, PromoteRequest, PromoteResponse
from core.common.errors import InputError, NotFound
from core.models.bundle import read_labels
from core.studio.auth import User
from core.studio.compare import compare, promote
from core.studio.registry import ModelVersion, get_model, list_models, live_model

router = APIRouter(tags=["models"])


def _summary(m: ModelVersion) -> dict:
    return {"version": m.version, "live": m.live, "created_at": m.created_at, "created_by": m.created_by,
            "missing": m.missing, "metrics": m.metrics}


@router.get("/v1/models", response_model=ModelList, responses=ERRORS, summary="Every registered version, newest first")
def models(user: User = Depends(allowed("predict")), ctx: ApiContext = Depends(context)) -> ModelList:
    return ModelList(models=[ModelSummary(**_summary(m)) for m in list_models(ctx.store)])


def _version(ctx: ApiContext, version: str) -> ModelVersion:
    found = get_model(ctx.store, version)
    if found is None:
        raise NotFound(f"no model version '{version}'")
    return found


@router.get("/v1/models/{version}", response_model=ModelDetail, responses=ERRORS,
            summary="One version: metadata, classes, metrics")
def model(version: str, user: User = Depends(allowed("predict")), ctx: ApiContext = Depends(context)) -> ModelDetail:
    found = _version(ctx, version)
    classes = [] if found.missing else read_labels(found.path)
    return ModelDetail(**_summary(found), activated_at=found.activated_at, classes=classes,
                       metadata=asdict(found.metadata))


@router.post("/v1/models/{version}/promote", response_model=PromoteResponse, responses=ERRORS,
             summary="Make a version live after comparing it with the live one (roll back = promote an older one)")
def promote_version(version: str, body: PromoteRequest | None = None, user: User = Depends(allowed("models")),
                    ctx: ApiContext = Depends(context)) -> PromoteResponse:
    body = body or PromoteRequest()
    candidate = _version(ctx, version)
    live = live_model(ctx.store)
    if live is not None and live.version == candidate.version:
        return PromoteResponse(version=version, live=True, previous=live.version, comparison=None)
    comparison = None
    if live is not None and not live.missing:
        try:
            comparison = compare(ctx.store, ctx.models.classifier(ctx.store, live.version)[0],
                                 ctx.models.classifier(ctx.store, version)[0])
        except NotFound:
            raise
        except InputError:
            comparison = None  # nothing held out to compare on: the page promotes without one too
    promote(ctx.store, user, version, comparison=comparison, confirm_worse=body.confirm_worse)
    shown = None if comparison is None else {
        "rows": comparison.rows, "delta_macro_f1": comparison.delta_macro_f1, "worse": comparison.worse,
        "tolerance": comparison.tolerance,
        "live": {k: comparison.live[k] for k in ("accuracy", "macro_f1")},
        "candidate": {k: comparison.candidate[k] for k in ("accuracy", "macro_f1")}}
    return PromoteResponse(version=version, live=True, previous=live.version if live else None, comparison=shown)
