"""`python -m core serve`: everything a first run needs, then the Streamlit app.

1. the disk tidied (`tidy_disk`), the database (migrated) and a first admin: from STUDIO_ADMIN_USER/PASSWORD, or a
   one-time password printed here;
2. a live model: the demo catalogue (`../shared/data/flipkart`, or STUDIO_DEMO_DATA) is
   imported once and the demo bundle trained from the database, so its frozen evaluation
   slice stays unseen; without demo data the app explains how to import one;
3. `streamlit run streamlit_app.py` in the foreground.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

from core.common.settings import REPO_ROOT, get_settings

SYSTEM = "system"


def prepare(*, demo: bool = True, log=print) -> str | None:
    """Steps 1 and 2; returns the one-time admin password when one was created."""
    from core.models.bundle import is_bundle
    from core.studio.auth import User, ensure_first_admin
    from core.studio.batch import tidy_disk
    from core.studio.demo import demo_data_dir, demo_model_dir, load_demo_catalogue
    from core.studio.registry import sync_models
    from core.studio.store import Store

    store = Store()
    tidy_disk()
    one_time = ensure_first_admin(store)
    sync_models(store)
    data = demo_data_dir()
    if demo and (data / "products.csv").is_file():
        system = User.system(SYSTEM)
        if store.one("SELECT COUNT(*) AS n FROM products WHERE source = 'catalogue:demo'")["n"] == 0:
            from core.studio.labels import import_catalogue

            summary = import_catalogue(store, system, load_demo_catalogue(data), "demo")
            log(f"Imported the demo catalogue from {data}: {summary.added} products "
                f"({summary.eval_rows} frozen for evaluation).")
        if not is_bundle(demo_model_dir()):
            # trained from the database, so the frozen evaluation slice stays unseen
            from core.studio.retrain import start_training

            log("Training the demo model (once; about two minutes)…")
            start_training(store, system, background=False, out=demo_model_dir())  # registers it
    elif store.one("SELECT 1 AS x FROM models LIMIT 1") is None:
        log("No model yet and no demo catalogue: log in as admin and import one on the Models page.")
    return one_time


def port_in_use(address: str, port: int) -> bool:
    """Whether a server already listens on address:port. Checked like Streamlit's server
    binds (SO_REUSEADDR: a stopped server's lingering connections do not count)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def check_port(address: str, port: int) -> None:
    """Fail with one line (exit 2) instead of printing a URL that another process answers."""
    from core.common.errors import InputError

    try:
        busy = port_in_use(address, port)
    except OSError as exc:  # e.g. an address this machine does not have, or a port below 1024
        raise InputError(f"cannot listen on {address} port {port}: {exc.strerror or exc}") from None
    if busy:
        raise InputError(f"port {port} is in use (another Catalog Studio?); choose another with --port")


def run(port: int = 8501, address: str = "127.0.0.1", demo: bool = True) -> int:
    check_port(address, port)  # before preparing, which may train the demo model for minutes
    one_time = prepare(demo=demo)
    if one_time:
        print(f"\n  First admin: 'admin', one-time password: {one_time}\n"
              "  (you will choose your own at first log-in)\n", flush=True)
    check_port(address, port)  # and again: something may have taken it meanwhile
    print(f"Catalog Studio on http://{address}:{port}", flush=True)
    command = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "streamlit_app.py"),
               "--server.headless", "true", "--server.address", address, "--server.port", str(port),
               "--browser.gatherUsageStats", "false"]
    os.chdir(REPO_ROOT)
    os.execv(sys.executable, command)  # the app replaces this process (Ctrl-C stops it)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="start the app (first admin, demo model, then Streamlit)")
    p.add_argument("--port", type=int, default=get_settings().port)
    p.add_argument("--address", default=get_settings().address,
                   help="interface to listen on (0.0.0.0 for every interface)")
    p.add_argument("--no-demo", action="store_true", help="do not train or import the demo catalogue")
    p.add_argument("--prepare-only", action="store_true", help="set up, then exit without starting the app")


def command(args) -> int:
    if args.prepare_only:
        one_time = prepare(demo=not args.no_demo)
        if one_time:
            print(f"First admin: 'admin', one-time password: {one_time}")
        return 0
    return run(args.port, args.address, demo=not args.no_demo)

