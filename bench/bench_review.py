"""How fast a reviewer can work the queue on the keyboard, measured in a real browser:
key press (A accept, 2 second suggestion, S skip) → the next product on screen, after
warm-up; decisions per minute with no thinking time, next to the server's own cost of a
decision (claim + save, in-process, the same run) as the reference.

    STUDIO_HOME=/tmp/reviewhome .venv/bin/python bench/bench_review.py [--n 40] [--out FILE]

Uses the home's live model, or prepares the demo one (`python -m core serve` does the
same) from ../shared/data/flipkart; scores --n + warm-up Flipkart products into the queue.
Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

from _report import emit  # noqa: E402 - bench/ is the script's folder
from bench_app import ensure_user, percentiles, products  # noqa: E402
from helpers.browser import browser_page, log_in, streamlit_server  # noqa: E402

USER, PASSWORD = "bench", "queue-runner-77"
KEYS = ["a"] * 7 + ["2"] * 2 + ["s"]  # mostly accepts, some picks, a skip now and then


def fill_queue(n: int, seed: int) -> None:
    from core.models.classifier import Classifier
    from core.studio.auth import authenticate
    from core.studio.registry import live_model
    from core.studio.scoring import score_product
    from core.studio.store import Store

    store = Store()
    user = authenticate(store, USER, PASSWORD)
    classifier = Classifier.load(live_model(store).path)
    for text, image in products(n, seed=seed):
        score_product(store, classifier, user, text=text, image=image.read_bytes())


def shown_product(page) -> int:
    head = page.locator("strong", has_text="Product ").first
    head.wait_for(timeout=60_000)
    return int(head.inner_text().split()[1])


def server_reference(n: int) -> dict:
    """The same decisions without a browser: claim the next item and accept it."""
    from core.studio.auth import authenticate
    from core.studio.review_queue import claim_next, record_review, undo_last
    from core.studio.store import Store

    store = Store()
    user = authenticate(store, USER, PASSWORD)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        item = claim_next(store, user)
        if item is None:
            break
        record_review(store, user, item.product_id, "accept", seen_review_id=item.seen_review_id)
        times.append(time.perf_counter() - started)
    for _ in times:  # leave the queue as it was
        undo_last(store, user)
    return percentiles(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="decisions timed after warm-up")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from core.cli.serve import prepare

    prepare(log=lambda m: print(m, file=sys.stderr))
    ensure_user()
    fill_queue(args.n + args.warmup + 5, seed=7)
    reference = server_reference(10)
    rng = random.Random(0)
    per_decision, keys = [], []
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_review_streamlit.log"
    with streamlit_server(dict(os.environ), log) as url, browser_page() as page:
        log_in(page, url, USER, PASSWORD)
        page.get_by_role("link", name="Review queue").click()
        current = shown_product(page)
        started_all = None
        for k in range(args.n + args.warmup):
            if k == args.warmup:
                started_all = time.perf_counter()
            key = rng.choice(KEYS)
            started = time.perf_counter()
            page.keyboard.press(key)
            page.wait_for_function(
                """previous => { const el = [...document.querySelectorAll('strong')]
                                     .find(e => e.innerText.startsWith('Product '));
                                 return el && el.innerText !== 'Product ' + previous; }""",
                arg=current, timeout=60_000)
            current = shown_product(page)
            if k >= args.warmup:
                per_decision.append(time.perf_counter() - started)
                keys.append(key)
        elapsed = time.perf_counter() - started_all
    result = {
        "cpu_count": os.cpu_count(),
        "protocol": (f"real browser (Debian chromium, Playwright) on the Review queue of {args.n + args.warmup + 5} "
                     f"Flipkart products scored with the live model; {args.warmup} warm-up decisions, then {args.n} "
                     "key presses (A accept 70%, 2 second suggestion 20%, S skip 10%), each timed until the next "
                     "product is on screen; no thinking time"),
        "key_to_next_item_seconds": percentiles(per_decision),
        "decisions_per_minute": round(len(per_decision) / elapsed * 60, 1),
        "reference_server_claim_and_decide_seconds": reference,
        "keys": {key: keys.count(key) for key in sorted(set(keys))},
        "targets": {"decisions_per_minute": 30, "key_to_next_item_seconds": 1.0},
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
