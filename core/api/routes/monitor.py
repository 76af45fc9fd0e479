"""GET /v1/monitor: the Monitor page's aggregates as JSON."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from core.api.context import ApiContext, allowed, context
from core.api.schemas import ERRORS
from core.studio.auth import User
from core.studio.monitor import report

router = APIRouter(tags=["monitor"])


@router.get("/v1/monitor", responses=ERRORS,
            summary="Totals, predictions per day, confidence, corrections and drift (the Monitor page's data)")
def monitor(days: int | None = Query(30, ge=1, le=3660, description="window in days (omit for 30)"),
            level: int | None = Query(None, ge=1, le=9, description="a category tree level (default: whole paths)"),
            user: User = Depends(allowed("monitor")), ctx: ApiContext = Depends(context)) -> dict[str, Any]:
    return report(ctx.store, user, days, level)
