"""The review queue over HTTP: claim the next item, decide a product (the app's claims and
conflict rules hold: a stale decision is refused with 409)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Response

from core.api.context import ApiContext, allowed, context
from core.api.schemas import ERRORS, MAX_ID, LabelProbability, ReviewItem, ReviewRequest, ReviewResponse
from core.studio.auth import User
from core.studio.review_queue import DEFAULT_ORDER, categories_of, claim_next, record_review

router = APIRouter(tags=["review"])


@router.get("/v1/review/next", response_model=ReviewItem, responses={**ERRORS, 204: {"description": "queue empty"}},
            summary="Claim the next product to review (the same item again until decided or the claim expires)")
def next_item(order: str = Query(DEFAULT_ORDER, max_length=40, description="least_confidence, margin, "
                                 "disagreement, suspects, or least_confidence@N (a category tree level)"),
              user: User = Depends(allowed("review")), ctx: ApiContext = Depends(context)):
    item = claim_next(ctx.store, user, order)
    if item is None:
        return Response(status_code=204)
    return ReviewItem(
        product_id=item.product_id, prediction_id=item.prediction_id, seen_review_id=item.seen_review_id,
        text=item.text, has_image=item.image_path is not None, model_version=item.model_version, label=item.label,
        confidence=item.confidence, margin=item.margin, disagree=item.disagree,
        top=[LabelProbability(label=label, probability=p) for label, p in item.top(3)], text_label=item.text_label,
        image_label=item.image_label, source=item.source, claim_expires_at=item.claim_expires_at,
        categories=categories_of(ctx.store, item.product_id))


@router.post("/v1/products/{product_id}/review", response_model=ReviewResponse, responses=ERRORS,
             summary="Accept, correct, skip or mark out of scope (409 when someone decided it meanwhile)")
def review(body: ReviewRequest, product_id: int = Path(..., ge=1, le=MAX_ID),
           user: User = Depends(allowed("review")), ctx: ApiContext = Depends(context)) -> ReviewResponse:
    review_id = record_review(ctx.store, user, product_id, body.decision, new_label=body.label,
                              prediction_id=body.prediction_id, note=body.note, seen_review_id=body.seen_review_id,
                              respect_claims=body.seen_review_id is None)
    return ReviewResponse(review_id=review_id, product_id=product_id, decision=body.decision)
