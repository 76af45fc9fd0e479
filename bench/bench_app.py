"""How fast the app answers a person, measured in a real browser: from clicking
"Classify" (photo + description uploaded) to the probabilities on screen, and to the
explanations (Grad-CAM, word SHAP, modality share) on screen. After warm-up.

    STUDIO_HOME=/tmp/apphome .venv/bin/python bench/bench_app.py [--n 10] [--out FILE]

Uses the home's live model, or prepares the demo one (`python -m core serve` does the
same) from ../shared/data/flipkart. Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from _report import emit  # noqa: E402 - bench/ is the script's folder
from helpers.browser import browser_page, log_in, streamlit_server  # noqa: E402

USER, PASSWORD = "bench", "queue-runner-77"


def ensure_user() -> None:
    from core.studio.auth import User, create_user
    from core.studio.store import Store

    store = Store()
    if store.one("SELECT 1 AS x FROM users WHERE username = ?", [USER]):
        return
    admin = store.one("SELECT id, username FROM users WHERE role = 'admin' ORDER BY id LIMIT 1")
    by = User(admin["id"], admin["username"], "admin") if admin else None
    create_user(store, USER, PASSWORD, "reviewer", by=by)


def products(n: int, seed: int = 0) -> list[tuple[str, Path]]:
    import pandas as pd

    from core.studio.demo import demo_data_dir

    data = demo_data_dir()
    frame = pd.read_csv(data / "products.csv", dtype=str, keep_default_na=False)
    frame = frame[[(data / "images" / f).is_file() for f in frame["image"]]]
    rows = frame.sample(n, random_state=seed)
    return [(f"{r.product_name}. {r.description[:600]}", data / "images" / r.image) for r in rows.itertuples()]


def percentiles(values: list[float]) -> dict:
    values = sorted(values)
    return {"p50": round(statistics.median(values), 3), "p95": round(values[int(0.95 * (len(values) - 1))], 3),
            "max": round(values[-1], 3), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="products timed after warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from core.cli.serve import prepare
    from core.studio.registry import live_model
    from core.studio.store import Store

    prepare(log=lambda m: print(m, file=sys.stderr))
    ensure_user()
    model = live_model(Store())
    items = products(args.n + args.warmup, seed=1)
    to_probs, to_explained, server_ms = [], [], []
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_app_streamlit.log"
    with streamlit_server(dict(os.environ), log) as url, browser_page() as page:
        log_in(page, url, USER, PASSWORD)
        page.get_by_text("Predict a category").wait_for(timeout=120_000)
        for k, (text, image) in enumerate(items):
            next_id = (Store().one("SELECT MAX(id) AS m FROM products")["m"] or 0) + 1
            page.locator("input[type=file]").first.set_input_files(str(image))
            page.get_by_label("Description").fill(text)
            page.wait_for_timeout(300)  # let the upload settle before timing the click
            started = time.perf_counter()
            page.get_by_role("button", name="Classify").click()
            page.get_by_text(f"Product #{next_id} ·").wait_for(timeout=180_000)
            probs = time.perf_counter() - started
            page.get_by_text(f"product #{next_id}, explained in").wait_for(timeout=180_000)
            explained = time.perf_counter() - started
            if k >= args.warmup:
                to_probs.append(probs)
                to_explained.append(explained)
                server_ms.append(Store().one("SELECT latency_ms FROM predictions WHERE product_id = ?",
                                             [next_id])["latency_ms"])
            print(f"{k}: probabilities {probs:.2f} s, explanations {explained:.2f} s", file=sys.stderr)
    result = {
        "model": model.version if model else None, "cpu_count": os.cpu_count(),
        "protocol": f"real browser (Debian chromium, Playwright); {args.warmup} warm-up products, then {args.n} "
                    "Flipkart products (photo + description); time from the Classify click until the text on screen",
        "upload_to_probabilities_seconds": percentiles(to_probs),
        "upload_to_explanations_seconds": percentiles(to_explained),
        "server_prediction_ms": percentiles(server_ms),
        "targets": {"probabilities_seconds": 1.0, "explanations_seconds": 3.0},
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
