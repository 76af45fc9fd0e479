"""The FastAPI application: one ApiContext (store + loaded models) per app, the error
shape and body cap, and every router. `create_app()` is what uvicorn serves."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from core.api import errors
from core.api.context import ApiContext
from core.api.routes import auth, health, inference_v2, jobs, models, monitor, predict, review
from core.studio.serving import ModelCache
from core.studio.store import Store

DESCRIPTION = """Catalog Studio over HTTP: the same database, users, roles, model registry and review queue as
the app. Every endpoint but health needs `Authorization: Bearer <token>`: an API token
(`python -m core users token NAME`) or the JWT from `POST /v1/auth/token`.

Roles: viewer = predict, explain, models (read), monitor; reviewer = + review; admin = everything.
Errors always read `{"error": {"code", "message"}}`."""


def create_app(store: Store | None = None, model_cache: ModelCache | None = None) -> FastAPI:
    # Swagger UI's files come with the package, not from a CDN: /docs works on an offline server
    app = FastAPIOffline(title="Catalog Studio API", version="1", description=DESCRIPTION,
                         swagger_ui_parameters={"persistAuthorization": True})
    store = store or Store()  # migrated on opening
    app.state.context = ApiContext(store=store, models=model_cache or ModelCache())
    errors.install(app)
    for module in (health, auth, predict, models, jobs, review, monitor, inference_v2):
        app.include_router(module.router)
    app.add_middleware(errors.BodyLimit)
    document = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = document()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(predict.SCHEMAS)
        return app.openapi_schema

    app.openapi = openapi
    return app
