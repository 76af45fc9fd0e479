"""The Open Inference Protocol (KServe V2) over the live model, "catalog", so standard
inference clients work unchanged: metadata, readiness, and `infer` in the JSON tensor
form. Inputs `text` and `image` (base64) are BYTES of shape [n]; outputs `label` (BYTES
[n]) and `probabilities` (FP32 [n, classes], class order in the metadata's parameters)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from core.api.context import ApiContext, allowed, context
from core.api.products import image_bytes, item_name
from core.api.schemas import ERRORS, MAX_ITEMS, PredictItem
from core.common.errors import InputError, NotFound
from core.models.bundle import read_labels
from core.studio.auth import User
from core.studio.registry import ModelRef, list_models, model_ref
from core.studio.scoring import ProductInput, score_products
from core.studio.serving import NoModel

router = APIRouter(tags=["inference (Open Inference Protocol)"])
MODEL_NAME = "catalog"
INPUTS = ("text", "image")


class Tensor(BaseModel):
    name: str = Field(max_length=64)
    shape: list[int] = Field(max_length=4)
    datatype: str = Field(max_length=16)
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(max_length=MAX_ITEMS * 4)


class RequestedOutput(BaseModel):
    name: str = Field(max_length=64)
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = Field(None, max_length=200)
    parameters: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(min_length=1, max_length=2)
    outputs: list[RequestedOutput] | None = Field(None, max_length=2)


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[dict[str, Any]]


def _model(ctx: ApiContext, version: str | None) -> ModelRef:
    row = model_ref(ctx.store, version)  # not the registry row: its metrics are ~0.7 MB of JSON
    if row is None and version is None:
        raise NoModel("no model is live yet")
    if row is None:
        raise NotFound(f"no model version '{version}' of catalog")
    return row


def _flat(data: list) -> list:
    out: list = []
    for value in data:
        out.extend(_flat(value) if isinstance(value, list) else [value])
    return out


def _column(tensor: Tensor) -> list[str]:
    if tensor.name not in INPUTS:
        raise InputError(f"unknown input '{tensor.name}'; the inputs are {', '.join(INPUTS)}")
    if tensor.datatype != "BYTES":
        raise InputError(f"input '{tensor.name}' must be BYTES, got {tensor.datatype}")
    values = _flat(tensor.data)
    size = 1
    for dim in tensor.shape:
        if dim < 0:
            raise InputError(f"input '{tensor.name}': a request's shape has no -1")
        size *= dim
    if size != len(values) or len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InputError(f"input '{tensor.name}': shape {tensor.shape} does not fit {len(values)} values "
                         "(use [n] or [n, 1])")
    if not all(isinstance(v, str) for v in values):
        raise InputError(f"input '{tensor.name}': every value must be a string")
    return values


def infer(ctx: ApiContext, user: User, body: InferRequest, version: str | None) -> InferResponse:
    columns = {}
    for tensor in body.inputs:
        if tensor.name in columns:
            raise InputError(f"input '{tensor.name}' is given twice")
        columns[tensor.name] = _column(tensor)
    n = {len(v) for v in columns.values()}
    if len(n) != 1:
        raise InputError("text and image must have the same number of rows")
    n_rows = n.pop()
    if not 1 <= n_rows <= MAX_ITEMS:
        raise InputError(f"between 1 and {MAX_ITEMS} rows per request, got {n_rows}")
    wanted = [o.name for o in body.outputs] if body.outputs else ["label", "probabilities"]
    unknown = [w for w in wanted if w not in ("label", "probabilities")]
    if unknown:
        raise InputError(f"unknown output '{unknown[0]}'; the outputs are label, probabilities")
    row = _model(ctx, version)
    classifier, _ = ctx.models.classifier(ctx.store, row.version)
    products = []
    for i in range(n_rows):
        text = columns.get("text", [None] * n_rows)[i] or None
        photo = columns.get("image", [None] * n_rows)[i] or None
        what = item_name(None, i)
        item = PredictItem(text=text, image_base64=photo) if photo else None
        products.append(ProductInput(text, image_bytes(item, what) if item else None, what))
    scored = score_products(ctx.store, classifier, user, products, source="api")
    outputs = []
    if "label" in wanted:
        outputs.append({"name": "label", "datatype": "BYTES", "shape": [n_rows],
                        "data": [s.prediction.leaf for s in scored]})
    if "probabilities" in wanted:
        outputs.append({"name": "probabilities", "datatype": "FP32", "shape": [n_rows, len(classifier.labels)],
                        "data": [round(float(v), 6) for s in scored for v in s.prediction.fused]})
    return InferResponse(model_name=MODEL_NAME, model_version=row.version, id=body.id, outputs=outputs,
                         parameters={"product_ids": [s.product_id for s in scored]})


def metadata(ctx: ApiContext, version: str | None) -> dict:
    row = _model(ctx, version)
    classes = read_labels(row.path)
    return {"name": MODEL_NAME, "versions": [m.version for m in list_models(ctx.store) if not m.missing],
            "platform": "tensorflow_keras", "parameters": {"version": row.version, "classes": classes},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]},
                       {"name": "image", "datatype": "BYTES", "shape": [-1],
                        "parameters": {"content": "base64-encoded JPEG / PNG / WebP"}}],
            "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]}]}


def readiness(ctx: ApiContext, version: str | None) -> dict:
    row = _model(ctx, version)
    try:
        ctx.models.classifier(ctx.store, row.version)
    except (InputError, OSError, ValueError):
        return {"name": MODEL_NAME, "ready": False}
    return {"name": MODEL_NAME, "ready": True}


_ANY = Depends(allowed("predict"))


@router.get("/v2/models/catalog", responses=ERRORS, summary="Model metadata (the live version)")
def model_metadata(user: User = _ANY, ctx: ApiContext = Depends(context)) -> dict:
    return metadata(ctx, None)


@router.get("/v2/models/catalog/ready", responses=ERRORS, summary="Whether the live model is loaded and ready")
def model_ready(user: User = _ANY, ctx: ApiContext = Depends(context)) -> dict:
    return readiness(ctx, None)


@router.post("/v2/models/catalog/infer", response_model=InferResponse, responses=ERRORS,
             summary="Inference with the live model (JSON tensor form); every row is stored as /v1/predict does")
def model_infer(body: InferRequest, user: User = _ANY, ctx: ApiContext = Depends(context)) -> InferResponse:
    return infer(ctx, user, body, None)


@router.get("/v2/models/catalog/versions/{version}", responses=ERRORS, summary="Metadata of one version")
def version_metadata(version: str, user: User = _ANY, ctx: ApiContext = Depends(context)) -> dict:
    return metadata(ctx, version)


@router.get("/v2/models/catalog/versions/{version}/ready", responses=ERRORS, summary="Whether one version is ready")
def version_ready(version: str, user: User = _ANY, ctx: ApiContext = Depends(context)) -> dict:
    return readiness(ctx, version)


@router.post("/v2/models/catalog/versions/{version}/infer", response_model=InferResponse, responses=ERRORS,
             summary="Inference with one version")
def version_infer(version: str, body: InferRequest, user: User = _ANY,
                  ctx: ApiContext = Depends(context)) -> InferResponse:
    return infer(ctx, user, body, version)

