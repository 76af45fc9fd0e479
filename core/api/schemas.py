"""Request and response bodies: what /docs and /openapi.json show, checked on the way in."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.common.text import MAX_TEXT_CHARS

MAX_ITEMS = 256
MAX_IMAGE_BASE64 = 28 * 1024**2  # a 20 MB photo, base64-encoded
MAX_URL = 2048
MAX_TOP_K = 50
MAX_ID = 2**62  # ids beyond SQLite's integers are refused as input, not met as overflows


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductIn(Strict):
    """A description and/or a photo (base64 or a public URL)."""
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="title and description")
    image_base64: str | None = Field(None, max_length=MAX_IMAGE_BASE64, description="the photo's bytes, base64")
    image_url: str | None = Field(None, max_length=MAX_URL, description="an http(s) URL of the photo (public "
                                  "addresses only, unless the server allows more)")

    @model_validator(mode="after")
    def _one_image(self):
        if self.image_base64 is not None and self.image_url is not None:
            raise ValueError("give image_base64 or image_url, not both")
        return self


class PredictItem(ProductIn):
    id: str | int | None = Field(None, description="your id for this item, echoed back")

    @model_validator(mode="after")
    def _short_id(self):
        if isinstance(self.id, str) and len(self.id) > 200:
            raise ValueError("id: at most 200 characters")
        return self


class PredictRequest(Strict):
    items: list[PredictItem] = Field(..., min_length=1, max_length=MAX_ITEMS)
    top_k: int = Field(3, ge=1, le=MAX_TOP_K)


class LabelProbability(BaseModel):
    label: str
    probability: float


class LevelOut(BaseModel):
    name: str
    confidence: float | None


class PredictionOut(BaseModel):
    id: str | int | None
    product_id: int
    prediction_id: int
    label: str = Field(description="the predicted category (a category tree: its deepest level's name)")
    confidence: float
    top: list[LabelProbability] = Field(description="the top classes (a category tree: whole paths)")
    text_label: str | None
    image_label: str | None
    path: str | None = Field(None, description="a category tree: the predicted path, 'A >> B >> C'")
    levels: list[LevelOut] | None = Field(None, description="a category tree: each level and its confidence")
    disagree: bool


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]


class ExplainRequest(ProductIn):
    product_id: int | None = Field(None, ge=1, le=MAX_ID, description="explain a stored product (its description and photo) "
                                   "instead of text / image")
    label: str | None = Field(None, max_length=2000, description="the category to explain (default: the "
                              "predicted one)")


class ExplainResponse(BaseModel):
    model_version: str
    label: str = Field(description="the explained category")
    prediction: dict[str, Any]
    text_shap: dict[str, Any] | None = Field(None, description="SHAP value of every word (tokens)")
    gradcam_png_base64: str | None = Field(None, description="the photo with the Grad-CAM heatmap, PNG")
    gradcam: dict[str, Any] | None = None
    modality_share: dict[str, Any]
    notes: list[str]


class ModelSummary(BaseModel):
    version: str
    live: bool
    created_at: str | None
    created_by: str | None = None
    missing: bool = False
    metrics: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(ModelSummary):
    activated_at: str | None
    classes: list[str]
    metadata: dict[str, Any]


class PromoteRequest(Strict):
    confirm_worse: bool = Field(False, description="promote even if the comparison says it scores worse")


class PromoteResponse(BaseModel):
    version: str
    live: bool
    previous: str | None
    comparison: dict[str, Any] | None = Field(None, description="live vs this version on the held-out products")


class TrainRequest(Strict):
    options: dict[str, Any] | None = Field(None, description="training options (TrainConfig fields, as "
                                           "STUDIO_TRAIN_OPTIONS), e.g. {\"folds\": 5}")


class JobOut(BaseModel):
    id: int
    kind: str
    state: str = Field(description="running, done or failed")
    stage: str | None
    progress: float | None
    message: str | None
    error: str | None
    result: Any = None
    user: str | None
    created_at: str | None
    finished_at: str | None


class JobStarted(BaseModel):
    job: JobOut
    url: str


class ReviewItem(BaseModel):
    product_id: int
    prediction_id: int | None
    seen_review_id: int = Field(description="send it back with the decision: a decision made after someone "
                                "else settled the product is refused")
    text: str
    has_image: bool
    model_version: str | None
    label: str
    confidence: float
    margin: float
    disagree: bool
    top: list[LabelProbability]
    text_label: str | None
    image_label: str | None
    source: str | None
    claim_expires_at: float
    categories: list[str] = Field(description="what the label may be corrected to")


class ReviewRequest(Strict):
    decision: Literal["accept", "correct", "skip", "out_of_scope"]
    label: str | None = Field(None, max_length=2000, description="the right category (decision 'correct')")
    note: str | None = Field(None, max_length=2000)
    prediction_id: int | None = Field(None, ge=1, le=MAX_ID, description="the prediction reviewed (default: the "
                                      "latest)")
    seen_review_id: int | None = Field(None, ge=0, le=MAX_ID, description="from /v1/review/next: refuses a decision on a "
                                       "product someone settled after it was shown")


class ReviewResponse(BaseModel):
    review_id: int
    product_id: int
    decision: str


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 409, 413, 422, 429)}
