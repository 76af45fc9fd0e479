"""`python -m core api`: the HTTP API (FastAPI on uvicorn) over the same home and database
as the app. The app object is named by its import path, so the command line does not
import the API package (floors: core.cli and core.api are siblings)."""

from __future__ import annotations

from core.common.settings import get_settings

APP = "core.api.app:create_app"
DEFAULT_PORT = 8000


def add_parser(sub) -> None:
    p = sub.add_parser("api", help="serve the HTTP API (docs at /docs)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--address", default=get_settings().address,
                   help="interface to listen on (default 127.0.0.1; put a TLS proxy in front for others)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def command(args) -> int:
    import uvicorn

    from core.cli.serve import check_port
    from core.studio.registry import sync_models
    from core.studio.store import Store

    check_port(args.address, args.port)
    sync_models(Store())  # bundles copied into models/ are known before the first request
    print(f"Catalog Studio API on http://{args.address}:{args.port} (docs: /docs)", flush=True)
    uvicorn.run(APP, factory=True, host=args.address, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=10, server_header=False)
    return 0
