"""Load test of the HTTP API (issue 13): POST /v1/predict from a second process with 1, 4
and 16 concurrent clients, text only and text + photo, next to in-process
`Classifier.predict` on the same kind of items in the same run; prints one JSON document.

    .venv/bin/python bench/bench_api.py > /tmp/bench_api.json
    .venv/bin/python bench/bench_api.py --model models/demo --requests 20   # an existing bundle, a shorter run

The server is the real command (`python -m core api` on a free loopback port), set up the
way an operator would: `users add bench --role viewer`, `users token bench`,
`models add BUNDLE --activate`, in a fresh STUDIO_HOME made for the run under --home. The
model is --model, else a bundle trained once with `python -m core train` on the shared
Flipkart sample with photos (the demo's three category levels) and kept in --home, so
re-runs skip the training.

Every request is a distinct product (a Flipkart title + the start of its description and a
PriceRunner title in turn; the Flipkart photos as they are, base64, not resized; each batch
photo one the embedding cache has not seen), so each one is stored as a new
product + prediction in the home's SQLite, as the API does by design: that is part of the
cost. The client sends bodies serialised beforehand. Both processes share the machine's
cores (2 in the issue's targets), so the client's own work is in the API's numbers.

In-process references, measured while the server is idle: `Classifier.predict` (text, and
text + the photo's bytes) and `predict_batch` on 64 items; and `score_products` (predict +
the same SQLite writes, no HTTP), so the ratios split the API's overhead into storage and
HTTP. Targets (2 cores): text-only p95 <= 100 ms at 1 client, a 64-item batch <= 1 s (the
slowest of the timed ones, text only and text + photo each), no error under 16 clients. Data under $STUDIO_SHARED_DATA, else ../shared/data beside the
checkout. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import cycle
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import emit  # noqa: E402 - bench/ is the script's folder

DATA = Path(os.environ.get("STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))
CONCURRENCY = (1, 4, 16)
MODES = ("text", "text+photo")
BATCH = 64
USER, PASSWORD = "bench", "load-test-pw-2417"
TARGETS = {"text_p95_ms_1_client": 100.0, "batch_64_seconds": 1.0, "errors_16_clients": 0}


def log(message: str) -> None:
    print(f"[bench_api {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles_ms(seconds: list[float]) -> dict:
    values = sorted(s * 1000 for s in seconds)
    if not values:
        return {"n": 0}
    return {"p50": round(statistics.median(values), 1), "p95": round(values[int(0.95 * (len(values) - 1))], 1),
            "max": round(values[-1], 1), "mean": round(statistics.fmean(values), 1), "n": len(values)}


# --------------------------------------------------------------------------- data


class Items:
    """Distinct products for the whole run: Flipkart (title + the start of the description,
    as the catalogue gives it) and PriceRunner titles in turn, each text used once; the
    Flipkart photos (bytes as on disk) in a cycle for single products. Batches embed their
    photos through the home's embedding cache (by file hash), so every batch photo is one
    no batch has sent before in the run: a cold cache, the worst case."""

    def __init__(self) -> None:
        import pandas as pd

        flipkart = DATA / "flipkart"
        frame = pd.read_csv(flipkart / "products.csv", dtype=str, keep_default_na=False)
        fk = [f"{r.product_name}. {r.description[:300]}".strip() for r in frame.itertuples()]
        pr = pd.read_csv(DATA / "pricerunner" / "pricerunner_aggregate.csv", dtype=str, keep_default_na=False)
        prt = list(dict.fromkeys(t.strip() for t in pr["Product Title"] if t.strip()))
        mixed = [t for pair in zip(fk, prt) for t in pair] + prt[len(fk):]
        self._texts = iter(dict.fromkeys(mixed))  # distinct, order kept
        self.photo_paths = [flipkart / "images" / f for f in frame["image"] if f and (flipkart / "images" / f).is_file()]
        if not self.photo_paths:
            raise SystemExit(f"no Flipkart photos under {flipkart / 'images'}")
        self._photos = cycle(range(len(self.photo_paths)))
        self._batch_photos = iter(range(len(self.photo_paths)))
        self._bytes: dict[int, bytes] = {}

    def text(self) -> str:
        try:
            return next(self._texts)
        except StopIteration:
            raise SystemExit("ran out of distinct texts: lower --requests / --max-total") from None

    def photo(self, *, for_batch: bool = False) -> tuple[Path, bytes]:
        try:
            k = next(self._batch_photos if for_batch else self._photos)
        except StopIteration:
            raise SystemExit(f"only {len(self.photo_paths)} photos for batches: lower --batch-repeats") from None
        if k not in self._bytes:
            self._bytes[k] = self.photo_paths[k].read_bytes()
        return self.photo_paths[k], self._bytes[k]

    def item(self, mode: str, *, for_batch: bool = False) -> dict:
        """One API item (JSON-ready)."""
        out = {"text": self.text()}
        if mode == "text+photo":
            out["image_base64"] = base64.b64encode(self.photo(for_batch=for_batch)[1]).decode()
        return out

    def body(self, mode: str, n: int = 1) -> bytes:
        return json.dumps({"items": [self.item(mode, for_batch=n > 1) for _ in range(n)]}).encode()


# --------------------------------------------------------------------------- model and server


def cli(env: dict, *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    """`python -m core ARGS` in the run's home; its stdout, or SystemExit with its stderr."""
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, input=stdin, text=True,
                          capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`python -m core {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def ensure_bundle(args) -> tuple[Path, float | None]:
    """--model, else the cached Flipkart bundle in --home (trained now if missing, with the
    CLI in the cache home so its photo embeddings are cached too); seconds spent training."""
    from core.models.bundle import is_bundle

    if args.model:
        if not is_bundle(args.model):
            raise SystemExit(f"--model {args.model} is not a model bundle")
        return args.model.resolve(), None
    bundle = args.home / f"flipkart_depth{args.label_depth}"
    if is_bundle(bundle):
        log(f"using the cached bundle {bundle}")
        return bundle, None
    flipkart = DATA / "flipkart"
    log(f"training {bundle} on {flipkart} (once; minutes on 2 cores)")
    started = time.perf_counter()
    cli(dict(os.environ, STUDIO_HOME=str(args.home)), "train", "--data", str(flipkart / "products.csv"),
        "--text-cols", "product_name,description", "--label-col", "product_category_tree",
        "--label-depth", str(args.label_depth), "--image-col", "image", "--image-dir", str(flipkart / "images"),
        "--out", str(bundle), "--quiet", timeout=3600)
    seconds = time.perf_counter() - started
    log(f"trained in {seconds:.0f} s")
    return bundle, seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, base: str, server_log: Path, timeout: float = 300) -> float:
    """Seconds until GET /v2/health/ready answers 200 (the live model is loaded by then)."""
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited ({proc.returncode}):\n{server_log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=60).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the API was not ready after {timeout:.0f} s:\n{server_log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --------------------------------------------------------------------------- load


async def load(base: str, token: str, bodies: list[list[bytes]], items_per_body: int) -> dict:
    """One client per list of bodies, each sending its bodies one after another."""
    import httpx

    latencies: list[float] = []
    errors: Counter = Counter()
    samples: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def client_loop(client, mine: list[bytes]) -> None:
        for body in mine:
            started = time.perf_counter()
            try:
                response = await client.post("/v1/predict", content=body, headers=headers)
                ok = response.status_code == 200 and len(response.json()["predictions"]) == items_per_body
                problem = None if ok else f"HTTP {response.status_code}: {response.text[:300]}"
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"[:300]
            latencies.append(time.perf_counter() - started)
            if problem:
                errors[problem.split(":")[0]] += 1
                if len(samples) < 3:
                    samples.append(problem)

    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, mine) for mine in bodies))
        wall = time.perf_counter() - started
    n = sum(len(mine) for mine in bodies)
    return {"clients": len(bodies), "requests": n, "items_per_request": items_per_body, "seconds": round(wall, 2),
            "requests_per_s": round(n / wall, 2), "items_per_s": round(n * items_per_body / wall, 2),
            "latency_ms": percentiles_ms(latencies), "errors": sum(errors.values()), "error_kinds": dict(errors),
            "error_samples": samples}


def api_phases(base: str, token: str, items: Items, args) -> dict:
    out: dict = {}
    for mode in MODES:
        asyncio.run(load(base, token, [[items.body(mode) for _ in range(args.warmup)]], 1))  # first calls
        out[mode] = {}
        for clients in CONCURRENCY:
            per_client = max(1, min(args.requests, args.max_total // clients))
            bodies = [[items.body(mode) for _ in range(per_client)] for _ in range(clients)]
            log(f"API {mode}: {clients} client(s) x {per_client} requests")
            result = load(base, token, bodies, 1)
            out[mode][f"{clients}_clients"] = r = asyncio.run(result)
            log(f"  {r['requests_per_s']} req/s, p50 {r['latency_ms']['p50']} ms, p95 {r['latency_ms']['p95']} ms, "
                f"errors {r['errors']}")
    for mode in MODES:
        asyncio.run(load(base, token, [[items.body(mode, BATCH)]], BATCH))  # warm the batch path
        log(f"API {mode}: {args.batch_repeats} batches of {BATCH}")
        r = asyncio.run(load(base, token, [[items.body(mode, BATCH) for _ in range(args.batch_repeats)]], BATCH))
        out[mode][f"batch_{BATCH}"] = r
        log(f"  p50 {r['latency_ms']['p50']} ms, max {r['latency_ms']['max']} ms, errors {r['errors']}")
    return out


# --------------------------------------------------------------------------- in-process


def timed(fn, inputs: list) -> tuple[list[float], float]:
    """fn(x) for each input: the time of each call, and of all."""
    times = []
    started = time.perf_counter()
    for x in inputs:
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return times, time.perf_counter() - started


def summary(times: list[float], wall: float, items_each: int = 1) -> dict:
    return {"latency_ms": percentiles_ms(times), "requests_per_s": round(len(times) / wall, 2),
            "items_per_s": round(len(times) * items_each / wall, 2)}


def in_process(bundle: Path, items: Items, args) -> dict:
    """The same kind of work without HTTP: Classifier.predict / predict_batch, and
    score_products (predict + the API's SQLite writes) as the `bench` user."""
    from core.models.classifier import Classifier
    from core.studio.auth import authenticate
    from core.studio.scoring import ProductInput, score_products
    from core.studio.store import Store

    started = time.perf_counter()
    classifier = Classifier.load(bundle)
    load_seconds = time.perf_counter() - started
    store = Store()
    user = authenticate(store, USER, PASSWORD)
    n, warm = args.inprocess, args.warmup
    out: dict = {"load_seconds": round(load_seconds, 2)}

    def predict(product: ProductInput) -> None:
        classifier.predict(text=product.text, image=product.image)

    def score(product: ProductInput) -> None:
        score_products(store, classifier, user, [product], source="bench")

    def predict_batch(batch: tuple[list[str], list[Path | None]]) -> None:
        classifier.predict_batch(*batch)

    for mode in MODES:
        photo = mode == "text+photo"
        singles = [ProductInput(items.text(), items.photo()[1] if photo else None) for _ in range(2 * (n + warm))]
        batches = [([items.text() for _ in range(BATCH)],
                    [items.photo(for_batch=True)[0] if photo else None for _ in range(BATCH)])
                   for _ in range(args.batch_repeats + 1)]
        timed(predict, singles[:warm])
        log(f"in-process {mode}: Classifier.predict x {n}")
        out[mode] = {"predict": summary(*timed(predict, singles[warm:n + warm]))}
        timed(score, singles[n + warm:n + 2 * warm])
        log(f"in-process {mode}: score_products (predict + SQLite) x {n}")
        out[mode]["score_products"] = summary(*timed(score, singles[n + 2 * warm:]))
        timed(predict_batch, batches[:1])
        log(f"in-process {mode}: predict_batch of {BATCH} x {args.batch_repeats}")
        out[mode][f"predict_batch_{BATCH}"] = summary(*timed(predict_batch, batches[1:]), items_each=BATCH)
    out["model"] = {"version": classifier.version, "classes": len(classifier.labels),
                    "text_arch": classifier.metadata.text_arch, "backbone": classifier.metadata.backbone,
                    "image_part": classifier.image_model is not None}
    return out


# --------------------------------------------------------------------------- report


def ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


def ratios(api: dict, ref: dict) -> dict:
    """API / in-process: latency at 1 client (p50, p95), throughput at each concurrency
    (in-process is one caller, sequential), and the 64-item batch."""
    out = {}
    for mode in MODES:
        one = api[mode]["1_clients"]["latency_ms"]
        pred, scored = ref[mode]["predict"], ref[mode]["score_products"]
        out[mode] = {
            "latency_p50_1_client_vs_predict": ratio(one["p50"], pred["latency_ms"]["p50"]),
            "latency_p95_1_client_vs_predict": ratio(one["p95"], pred["latency_ms"]["p95"]),
            "latency_p50_1_client_vs_score_products": ratio(one["p50"], scored["latency_ms"]["p50"]),
            "score_products_p50_vs_predict": ratio(scored["latency_ms"]["p50"], pred["latency_ms"]["p50"]),
            "throughput_vs_predict": {f"{c}_clients": ratio(api[mode][f"{c}_clients"]["items_per_s"],
                                                            pred["items_per_s"]) for c in CONCURRENCY},
            f"batch_{BATCH}_p50_vs_predict_batch": ratio(api[mode][f"batch_{BATCH}"]["latency_ms"]["p50"],
                                                         ref[mode][f"predict_batch_{BATCH}"]["latency_ms"]["p50"]),
        }
    return out


def targets(api: dict, ref: dict) -> dict:
    p95 = api["text"]["1_clients"]["latency_ms"]["p95"]
    out = {"text_p95_ms_1_client": {"target": TARGETS["text_p95_ms_1_client"], "measured": p95,
                                    "met": p95 <= TARGETS["text_p95_ms_1_client"]}}
    for mode in MODES:  # every timed batch, the slowest counts
        worst = round(api[mode][f"batch_{BATCH}"]["latency_ms"]["max"] / 1000, 3)
        alone = round(ref[mode][f"predict_batch_{BATCH}"]["latency_ms"]["max"] / 1000, 3)
        out[f"batch_{BATCH}_{mode}_seconds"] = {"target": TARGETS["batch_64_seconds"], "measured": worst,
                                                "met": worst <= TARGETS["batch_64_seconds"],
                                                "in_process_predict_batch_seconds": alone}
    errors = sum(api[mode]["16_clients"]["errors"] for mode in MODES)
    out["errors_16_clients"] = {"target": TARGETS["errors_16_clients"], "measured": errors, "met": errors == 0}
    out["errors_any_phase"] = {"target": 0, "measured": sum(p["errors"] for m in MODES for p in api[m].values()),
                               "met": None}
    out["errors_any_phase"]["met"] = out["errors_any_phase"]["measured"] == 0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "catalog_studio_bench_api",
                        help="cache folder: the trained bundle and, per run, a fresh STUDIO_HOME (removed after)")
    parser.add_argument("--model", type=Path, help="an existing bundle (skips training)")
    parser.add_argument("--label-depth", type=int, default=3, help="category levels of the bundle trained here")
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--max-total", type=int, default=400, help="at most this many requests per phase")
    parser.add_argument("--batch-repeats", type=int, default=5, help=f"timed {BATCH}-item batches per mode")
    parser.add_argument("--inprocess", type=int, default=100, help="in-process calls timed per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--keep-home", action="store_true", help="keep the run's STUDIO_HOME (database, log)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    args.home = args.home.resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()

    bundle, train_seconds = ensure_bundle(args)
    run_home = Path(tempfile.mkdtemp(prefix="run-", dir=args.home))
    os.environ["STUDIO_HOME"] = str(run_home)  # this process's in-process reference uses it too
    env = dict(os.environ)
    items = Items()
    proc = None
    try:
        cli(env, "users", "add", USER, "--role", "viewer", stdin=PASSWORD + "\n")
        token = cli(env, "users", "token", USER, "--label", "bench_api").strip().splitlines()[-1]
        log(cli(env, "models", "add", str(bundle), "--activate").strip())
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server_log = run_home / "api.log"
        with server_log.open("w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "core", "api", "--port", str(port)], cwd=REPO, env=env,
                                    stdout=sink, stderr=subprocess.STDOUT)
        log(f"API pid {proc.pid} on {base}; waiting for /v2/health/ready")
        ready_seconds = wait_ready(proc, base, server_log)
        log(f"ready after {ready_seconds:.1f} s")
        reference = in_process(bundle, items, args)  # the server is idle meanwhile
        api = api_phases(base, token, items, args)
        server_errors = [line for line in server_log.read_text(errors="replace").splitlines()
                         if "Traceback" in line or " 500 " in line]
    finally:
        if proc is not None:
            stop(proc)
        if not args.keep_home:
            shutil.rmtree(run_home, ignore_errors=True)
        else:
            log(f"run home kept: {run_home}")

    result = {
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "protocol": (
            f"`python -m core api` on 127.0.0.1 (uvicorn, one process) in a fresh STUDIO_HOME; a viewer's API token; "
            f"bundle {bundle.name} registered with `models add --activate`. httpx AsyncClient in this process, "
            f"keep-alive, bodies serialised beforehand; every item a distinct product (Flipkart title + description "
            f"and PriceRunner titles in turn; Flipkart photos as on disk, base64), each stored by the API. Per mode: "
            f"{args.warmup} warm-up requests, then {CONCURRENCY} concurrent clients x min({args.requests}, "
            f"{args.max_total} // clients) single-item requests; then {args.batch_repeats} {BATCH}-item requests "
            f"after one warm-up. In-process (same run, server idle): {args.inprocess} calls per mode after "
            f"{args.warmup} warm-ups"),
        "model": {**reference.pop("model"), "bundle": str(bundle),
                  "trained_seconds": None if train_seconds is None else round(train_seconds, 1)},
        "server_ready_seconds": round(ready_seconds, 2),
        "api": api,
        "in_process": reference,
        "api_over_in_process": ratios(api, reference),
        "server_log_errors": server_errors[:5],
        "targets": targets(api, reference),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
