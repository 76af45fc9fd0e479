"""Liveness and readiness, no authentication (load balancers and orchestrators ask)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from core.api.context import ApiContext, context
from core.common.errors import InputError

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", summary="The server process answers")
def live() -> dict:
    return {"live": True}


@router.get("/v2/health/ready", summary="A live model is loaded (503 until then)")
def ready(ctx: ApiContext = Depends(context)):
    try:
        _, row = ctx.models.classifier(ctx.store)
    except (InputError, OSError, ValueError) as exc:
        return JSONResponse({"ready": False, "reason": str(exc)}, status_code=503)
    return {"ready": True, "model_version": row.version}


@router.get("/v2", summary="Server metadata (Open Inference Protocol)")
def server_metadata() -> dict:
    return {"name": "catalog-studio", "version": "2", "extensions": []}
