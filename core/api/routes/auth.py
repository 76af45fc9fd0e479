"""Log-in by password for a short-lived JWT (throttled as the app's log-in)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm

from core.api.context import ApiContext, context
from core.api.errors import ApiError
from core.api.schemas import ERRORS, TokenResponse
from core.studio.auth import MAX_PASSWORD_LENGTH, authenticate
from core.studio.tokens import issue_jwt

router = APIRouter(tags=["auth"])


@router.post("/v1/auth/token", response_model=TokenResponse, responses=ERRORS,
             summary="Exchange a username and password (OAuth2 password form) for a JWT")
def token(form: OAuth2PasswordRequestForm = Depends(), ctx: ApiContext = Depends(context)) -> TokenResponse:
    if len(form.password) > MAX_PASSWORD_LENGTH or len(form.username) > 200:
        raise ApiError(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    user = authenticate(ctx.store, form.username, form.password)  # LoginThrottled → 429
    if user is None:
        raise ApiError(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    access_token, lifetime = issue_jwt(ctx.store, user)
    return TokenResponse(access_token=access_token, expires_in=lifetime)
