"""One error shape for every failure, `{"error": {"code", "message"}}`, and a cap on request
bodies: bad input is always a 4xx with a one-line message, never a 500 or a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.common.errors import InputError, NotFound, one_line
from core.studio.auth import LoginThrottled, PermissionDenied
from core.studio.jobs import JobBusy
from core.studio.review_queue import DecisionConflict
from core.studio.serving import NoModel
from core.studio.store import StoreWriteError, out_of_space

log = logging.getLogger("catalog_studio.api")

MAX_BODY_BYTES = 64 * 1024**2          # JSON and single photos
MAX_UPLOAD_BYTES = 500 * 1024**2       # catalogue CSV + zip (the app's upload limit)
UPLOAD_PATHS = ("/v1/catalogues",)

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
         429: "too_many_requests", 500: "internal", 503: "unavailable", 507: "insufficient_storage"}


class ApiError(Exception):
    """An HTTP error raised by a handler: status, machine-readable code, one-line message."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code or CODES.get(status, "error"), message, headers


def error_response(status: int, message: str, code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code or CODES.get(status, "error"), "message": one_line(message)}},
                        status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed_json", "the body is not valid JSON"
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid_request", "; ".join(parts) + more


def install(app: FastAPI) -> None:
    """Map every exception the handlers can meet to the one shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        status, code, message = _validation_message(exc)
        return error_response(status, message, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(LoginThrottled)
    async def _throttled(request: Request, exc: LoginThrottled):
        return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(PermissionDenied)
    async def _denied(request: Request, exc: PermissionDenied):
        return error_response(403, str(exc))

    @app.exception_handler(InputError)
    async def _input(request: Request, exc: InputError):
        if isinstance(exc, NoModel):
            return error_response(503, str(exc), "no_model", headers={"Retry-After": "30"})
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, (DecisionConflict, JobBusy)) else 400
        return error_response(status, str(exc))

    @app.exception_handler(StoreWriteError)
    async def _store(request: Request, exc: StoreWriteError):
        if out_of_space(exc):
            return error_response(507, "the server's disk is full; nothing was saved")
        log.error("database write failed", exc_info=exc)
        return error_response(503, "the database is busy or cannot be written; nothing was saved; try again")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); it was logged")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse bodies over the cap with 413 before they are read into memory: by their
    Content-Length, or while they stream in (chunked uploads have none)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, upload_bytes: int = MAX_UPLOAD_BYTES):
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if scope["path"].startswith(UPLOAD_PATHS) else self.max_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = error_response(413, f"the request body is over {limit // 1024**2} MB")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await error_response(400, "Content-Length is not a number")(scope, receive, send)
                return
            if declared > limit:
                await too_large(scope, receive, send)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await too_large(scope, receive, send)
