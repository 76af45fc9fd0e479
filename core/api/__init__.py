"""The HTTP API (`python -m core api`): FastAPI over the same `core.studio` services as the
app — same database, users, roles, claims, registry and jobs. Handlers only translate
HTTP to those calls and their answers (and exceptions) back to JSON."""
