"""What every handler needs, built once per app: the store, the loaded models, and the
acting user from the `Authorization: Bearer` header (an API token or a JWT)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

from core.api.errors import ApiError
from core.studio.auth import User, require_current
from core.studio.serving import ModelCache
from core.studio.store import Store
from core.studio.tokens import bearer_user

# Documents the scheme in OpenAPI (the /docs "Authorize" button logs in by password);
# API tokens are sent the same way.
oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False,
                              description="an API token (`python -m core users token NAME`) or the JWT that "
                                          "POST /v1/auth/token returns")
# The same header, documented a second way so /docs can take a pasted API token too.
api_token = HTTPBearer(auto_error=False, scheme_name="APIToken",
                       description="paste an API token from `python -m core users token NAME`")


@dataclass
class ApiContext:
    store: Store
    models: ModelCache


def context(request: Request) -> ApiContext:
    return request.app.state.context


def caller(token: str | None = Depends(oauth2), pasted: HTTPAuthorizationCredentials | None = Depends(api_token),
           ctx: ApiContext = Depends(context)) -> User:
    """The authenticated user, or 401."""
    token = token or (pasted.credentials if pasted else None)
    user = bearer_user(ctx.store, token)
    if user is None:
        message = ("send Authorization: Bearer <token> (an API token, or a JWT from POST /v1/auth/token)"
                   if not token else "the token is invalid, expired or revoked")
        raise ApiError(401, message, headers={"WWW-Authenticate": "Bearer"})
    return user


def allowed(action: str):
    """A dependency: the caller, if their role (as it is now) allows `action`, else 403."""

    def check(user: User = Depends(caller), ctx: ApiContext = Depends(context)) -> User:
        return require_current(ctx.store, user, action)

    return check
