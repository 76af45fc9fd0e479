"""POST /v1/predict (JSON items or one multipart product) and POST /v1/explain."""

from __future__ import annotations

import base64
import json

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from core.api.context import ApiContext, allowed, context
from core.api.errors import ApiError
from core.api.products import image_bytes, inputs, prediction_out
from core.api.schemas import (
    ERRORS,
    MAX_ITEMS,
    ExplainRequest,
    ExplainResponse,
    PredictRequest,
    PredictResponse,
)
from core.common.errors import InputError
from core.explain.service import explain
from core.studio.auth import User
from core.studio.browse import product_history
from core.studio.scoring import score_products

router = APIRouter(tags=["predict"])
SOURCE = "api"
MULTIPART_FIELDS = {"id", "text", "top_k", "image"}

_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "id": {"type": "string"},
                   "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
                   "image": {"type": "string", "format": "binary"}},
}


# The JSON body is parsed by hand (the same path takes a multipart form), so FastAPI does not
# list its models: they join the document's components here (app.py adds SCHEMAS).
_JSON_SCHEMA = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
SCHEMAS = {**_JSON_SCHEMA.pop("$defs", {}), "PredictRequest": _JSON_SCHEMA}


def _validated(model, data):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


async def _request_body(request: Request) -> PredictRequest:
    """The JSON body, or one product as a multipart form (text, image file, id, top_k)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=len(MULTIPART_FIELDS))
        except Exception as exc:  # noqa: BLE001 - starlette raises its own types for bad forms
            raise ApiError(400, f"the multipart form cannot be read: {exc}") from None
        unknown = set(form.keys()) - MULTIPART_FIELDS
        if unknown:
            raise ApiError(422, f"unknown form fields: {', '.join(sorted(unknown))}", code="invalid_request")
        item = {"id": form.get("id"), "text": form.get("text")}
        upload = form.get("image")
        if upload is not None and not isinstance(upload, str):
            item["image_base64"] = base64.b64encode(await upload.read()).decode()
        elif isinstance(upload, str) and upload:
            raise ApiError(422, "image: send the photo as a file part", code="invalid_request")
        top_k = form.get("top_k") or 3
        return _validated(PredictRequest, {"items": [{k: v for k, v in item.items() if v is not None}],
                                           "top_k": top_k})
    if kind not in ("application/json", ""):
        raise ApiError(415, "send JSON (application/json) or a multipart form (multipart/form-data)")
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON", code="malformed_json") from None
    return _validated(PredictRequest, data)


def predict_items(ctx: ApiContext, user: User, body: PredictRequest, *, source: str = SOURCE,
                  version: str | None = None) -> PredictResponse:
    """Score and store every item (one transaction): the shared core of /v1/predict."""
    classifier, row = ctx.models.classifier(ctx.store, version)
    ids = [item.id for item in body.items]
    scored = score_products(ctx.store, classifier, user, inputs(body.items, ids), source=source)
    return PredictResponse(model_version=row.version,
                           predictions=[prediction_out(i, s, body.top_k) for i, s in zip(ids, scored)])


@router.post(
    "/v1/predict", response_model=PredictResponse, responses=ERRORS,
    summary=f"Categorise up to {MAX_ITEMS} products; each is stored and enters the review queue",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
        "multipart/form-data": {"schema": _MULTIPART_SCHEMA}}}})
async def predict(request: Request, user: User = Depends(allowed("predict")),
                  ctx: ApiContext = Depends(context)) -> PredictResponse:
    body = await _request_body(request)
    return await run_in_threadpool(predict_items, ctx, user, body)


@router.post("/v1/explain", response_model=ExplainResponse, responses=ERRORS,
             summary="Why: SHAP word values, the Grad-CAM heatmap (PNG) and each modality's share")
def explain_product(body: ExplainRequest, user: User = Depends(allowed("predict")),
                    ctx: ApiContext = Depends(context)) -> ExplainResponse:
    classifier, row = ctx.models.classifier(ctx.store)
    if body.product_id is not None:
        if body.text is not None or body.image_base64 is not None or body.image_url is not None:
            raise InputError("give product_id, or text / image, not both")
        product = product_history(ctx.store, user, body.product_id).product
        text, image = product["text"] or None, product["image_path"]
    else:
        text, image = body.text, image_bytes(body, "the product")
    if body.label is not None and body.label not in classifier.labels:
        raise InputError(f"'{body.label}' is not a category of model {row.version}")
    result = explain(classifier, text=text, image=image, class_label=body.label)
    png = result.gradcam_png()
    summary = result.as_dict()
    return ExplainResponse(model_version=row.version, label=result.label, prediction=summary["prediction"],
                           text_shap=summary.get("text_shap"), gradcam=summary.get("gradcam"),
                           gradcam_png_base64=base64.b64encode(png).decode() if png else None,
                           modality_share=summary["modality_share"], notes=result.notes)
