"""Benchmark of the batch engines (issue 14): rows per second of `python -m core predict`
with --engine local and --engine ray (1 and 2 workers) on 100k+ text rows and on 2,000
photos, in one run; prints one JSON document.

    .venv/bin/python bench/bench_ray.py > /tmp/bench_ray.json
    .venv/bin/python bench/bench_ray.py --rows 20000 --photos 300      # a shorter run
    .venv/bin/python bench/bench_ray.py --text-model DIR --photo-model DIR   # existing bundles
    .venv/bin/python bench/bench_ray.py --shards 8     # the data as a folder of 8 CSV shards

The engines are driven the way a user drives them: each run is the real command, a
subprocess, timed from start to exit, in a fresh STUDIO_HOME (so a run's image-embedding
cache starts empty and no run is made free by an earlier one), with RAY_ADDRESS unset (a
local cluster, started by the command itself). The ray runs' stderr is time-stamped line
by line: "joining Ray …" to "N Ray worker(s)" is that run's cluster start,
so its rows/s are given with and without it. Starting a bare local cluster
(`ray.init(num_cpus=2)` until a first task has run) is also measured on its own.

Data (made once under --home/data, reused): the PriceRunner titles repeated to --rows rows
(one CSV), and --photos Flipkart products (title, description, photo) cycled over the 837
photos of the shared sample, each row with its own copy of the photo made distinct by a
few trailing bytes after the JPEG's end (the decoded pixels are the same; the cache keys
photos by their bytes' hash), so the backbone runs once per row, as on a catalogue of
distinct photos. Models: --text-model (else a text-only bundle trained once on PriceRunner
into --home) and --photo-model (else bench_api's Flipkart text + photo bundle if present,
else one trained once into --home).

Every ray output is compared with the local one (same rows in the same order, same
predicted_label). Memory and CPU: the command's process tree is polled in /proc: the
driver's RSS and, per Ray actor (a `ray::MapWorker(...)` process), its peak RSS, private
memory and CPU seconds; the CPU of Ray's own processes; and the CPU the rest of the machine
used meanwhile (other work on the same cores skews a run: other_work_cores says how much).
Each actor's TensorFlow import and bundle load and each run's cluster start are fixed
costs: the 1 -> 2 worker scaling grows with --photos. Data under $STUDIO_SHARED_DATA, else ../shared/data beside the checkout. Progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _report import emit  # noqa: E402 - bench/ is the script's folder

DATA = Path(os.environ.get("STUDIO_SHARED_DATA", REPO.parent / "shared" / "data"))
API_BUNDLE = Path(tempfile.gettempdir()) / "catalog_studio_bench_api" / "flipkart_depth3"
TARGETS = {"photo_scaling_1_to_2_workers": 1.7}
POLL_SECONDS = 0.25
PAGE_MB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# the engine's line before ray.init ("joining Ray …", earlier "starting a local Ray cluster")
CLUSTER_START = re.compile(r"\b(joining|starting|connecting)\b.*\bRay\b", re.IGNORECASE)


def log(message: str) -> None:
    print(f"[bench_ray {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cli(env: dict, *args: str, timeout: float = 3600) -> str:
    """`python -m core ARGS`; its stdout, or SystemExit with its stderr."""
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"`python -m core {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


# --------------------------------------------------------------------------- models and data


def text_bundle(args) -> tuple[Path, float | None]:
    """--text-model, else a text-only PriceRunner bundle trained once into --home."""
    from core.models.bundle import is_bundle

    if args.text_model:
        if not is_bundle(args.text_model):
            raise SystemExit(f"--text-model {args.text_model} is not a model bundle")
        return args.text_model.resolve(), None
    bundle = args.home / "pricerunner_text"
    if is_bundle(bundle):
        log(f"using the cached text bundle {bundle}")
        return bundle, None
    log(f"training {bundle} on PriceRunner titles (once; about a minute)")
    started = time.perf_counter()
    cli(dict(os.environ, STUDIO_HOME=str(args.home)), "train", "--data",
        str(DATA / "pricerunner" / "pricerunner_aggregate.csv"), "--text-cols", "Product Title",
        "--label-col", "Category Label", "--out", str(bundle), "--quiet")
    return bundle, time.perf_counter() - started


def photo_bundle(args) -> tuple[Path, float | None]:
    """--photo-model, else bench_api's Flipkart bundle, else one trained once into --home."""
    from core.models.bundle import is_bundle

    if args.photo_model:
        if not is_bundle(args.photo_model):
            raise SystemExit(f"--photo-model {args.photo_model} is not a model bundle")
        return args.photo_model.resolve(), None
    for bundle in (API_BUNDLE, args.home / "flipkart_depth3"):
        if is_bundle(bundle):
            log(f"using the cached text + photo bundle {bundle}")
            return bundle, None
    bundle = args.home / "flipkart_depth3"
    flipkart = DATA / "flipkart"
    log(f"training {bundle} on {flipkart} with photos (once; minutes on 2 cores)")
    started = time.perf_counter()
    cli(dict(os.environ, STUDIO_HOME=str(args.home)), "train", "--data", str(flipkart / "products.csv"),
        "--text-cols", "product_name,description", "--label-col", "product_category_tree", "--label-depth", "3",
        "--image-col", "image", "--image-dir", str(flipkart / "images"), "--out", str(bundle), "--quiet")
    return bundle, time.perf_counter() - started


def text_rows(args) -> tuple[Path, dict]:
    """The PriceRunner titles repeated to --rows rows, one CSV (made once)."""
    import pandas as pd

    out = args.home / "data" / f"pricerunner_{args.rows}.csv"
    source = pd.read_csv(DATA / "pricerunner" / "pricerunner_aggregate.csv", dtype=str, keep_default_na=False)
    source.columns = [c.strip() for c in source.columns]
    source = source[["Product ID", "Product Title", "Category Label"]]
    if not out.is_file():
        repeats = -(-args.rows // len(source))
        frame = pd.concat([source] * repeats, ignore_index=True).iloc[:args.rows]
        frame.insert(0, "bench_row", range(1, len(frame) + 1))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(out)
    return out, {"file": str(out), "rows": args.rows, "distinct_titles": int(source["Product Title"].nunique()),
                 "source_rows": len(source), "text_cols": "Product Title"}


def sharded(csv: Path, shards: int) -> Path:
    """`csv` itself, or (--shards N > 1) a folder of N CSV shards of its rows, made once."""
    import pandas as pd

    if shards <= 1:
        return csv
    folder = csv.with_name(f"{csv.stem}_shards{shards}")
    if not folder.is_dir():
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        tmp = Path(tempfile.mkdtemp(prefix=".shards-", dir=csv.parent))
        size = -(-len(frame) // shards)
        for k, start in enumerate(range(0, len(frame), size)):
            frame.iloc[start:start + size].to_csv(tmp / f"part-{k + 1:05d}.csv", index=False)
        tmp.rename(folder)
    return folder


def photo_rows(args) -> tuple[Path, Path, dict]:
    """--photos Flipkart products cycled over the photos there are, each row its own photo
    file (the original's bytes + a row tag after the JPEG's end): distinct for the cache."""
    import pandas as pd

    flipkart = DATA / "flipkart"
    source = pd.read_csv(flipkart / "products.csv", dtype=str, keep_default_na=False)
    source = source[source["image"].map(lambda name: bool(name) and (flipkart / "images" / name).is_file())]
    source = source[["uniq_id", "product_name", "description", "image"]].reset_index(drop=True)
    folder = args.home / "data" / f"photos_{args.photos}"
    out = args.home / "data" / f"flipkart_{args.photos}.csv"
    rows = [source.iloc[i % len(source)] for i in range(args.photos)]
    names = [f"{i + 1:05d}_{row['image']}" for i, row in enumerate(rows)]
    if not out.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for i, (row, name) in enumerate(zip(rows, names)):
            data = (flipkart / "images" / row["image"]).read_bytes()
            (folder / name).write_bytes(data + f"\nbench_ray copy {i + 1}\n".encode())
        frame = pd.DataFrame(rows).reset_index(drop=True)
        frame["image"] = names
        frame.insert(0, "bench_row", range(1, len(frame) + 1))
        tmp = out.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(out)
    else:  # in the page cache for every run alike (the first run must not pay the disk alone)
        for name in names:
            (folder / name).read_bytes()
    size_mb = sum((folder / n).stat().st_size for n in names) / PAGE_MB
    return out, folder, {"file": str(out), "rows": args.photos, "distinct_photo_files": len(set(names)),
                         "source_photos": len(source), "photos_mb": round(size_mb, 1),
                         "text_cols": "product_name,description"}


# --------------------------------------------------------------------------- /proc sampling


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds so far) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (all cores, not idle)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _memory_mb(pid: int, *, private: bool) -> tuple[float, float | None]:
    """(RSS, private memory: private clean + dirty pages, None unless asked) in MB."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0, None
    if not private:
        return rss, None
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        own = sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))
        return rss, own / 1024
    except OSError:
        return rss, None


class TreeSampler(threading.Thread):
    """Polls the process tree under `root` (the command; Ray's gcs_server, raylet and
    workers are its descendants): peak RSS and CPU seconds per process and of the whole
    tree, and the CPU the rest of the machine used meanwhile (other work on shared cores)."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root = root
        self.stop_event = threading.Event()
        self.procs: dict[int, dict] = {}
        self.tree_peak_mb = 0.0
        self.samples = 0
        self.busy_at_start = _machine_busy_seconds()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(POLL_SECONDS)

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        cpu: dict[int, float] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _stat(name)
                if stat:
                    children.setdefault(stat[0], []).append(int(name))
                    cpu[int(name)] = stat[1]
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        total = 0.0
        for pid in tree:
            title = _cmdline(pid)
            actor = "MapWorker" in title
            rss, own = _memory_mb(pid, private=actor)
            total += rss
            entry = self.procs.setdefault(pid, {"titles": [], "max_rss_mb": 0.0, "max_private_mb": None,
                                                "cpu_seconds": 0.0})
            entry["cpu_seconds"] = max(entry["cpu_seconds"], cpu.get(pid, 0.0))
            short = title[:80]
            if short and short not in entry["titles"]:
                entry["titles"].append(short)
            entry["max_rss_mb"] = max(entry["max_rss_mb"], rss)
            if own is not None:
                entry["max_private_mb"] = max(entry["max_private_mb"] or 0.0, own)
        self.tree_peak_mb = max(self.tree_peak_mb, total)
        self.samples += 1

    def finish(self) -> dict:
        self.stop_event.set()
        self.join()
        busy = _machine_busy_seconds() - self.busy_at_start
        tree_cpu = sum(e["cpu_seconds"] for e in self.procs.values())
        actors = [{"pid": pid, "title": next(t for t in e["titles"] if "MapWorker" in t),
                   "max_rss_mb": round(e["max_rss_mb"], 1),
                   "max_private_mb": None if e["max_private_mb"] is None else round(e["max_private_mb"], 1),
                   "cpu_seconds": round(e["cpu_seconds"], 1)}
                  for pid, e in sorted(self.procs.items()) if any("MapWorker" in t for t in e["titles"])]
        driver = self.procs.get(self.root, {"max_rss_mb": 0.0, "cpu_seconds": 0.0})
        others = sorted(({"title": (e["titles"] or ["?"])[-1][:60], "cpu_seconds": round(e["cpu_seconds"], 1),
                          "max_rss_mb": round(e["max_rss_mb"], 1)}
                         for pid, e in self.procs.items()
                         if pid != self.root and not any("MapWorker" in t for t in e["titles"])),
                        key=lambda e: -e["cpu_seconds"])
        return {"driver_peak_rss_mb": round(driver["max_rss_mb"], 1),
                "cpu_seconds": {"driver": round(driver["cpu_seconds"], 1),
                                "actors": round(sum(a["cpu_seconds"] for a in actors), 1),
                                "ray_processes": round(tree_cpu - driver["cpu_seconds"]
                                                       - sum(a["cpu_seconds"] for a in actors), 1),
                                "whole_tree": round(tree_cpu, 1),
                                "rest_of_machine": round(max(0.0, busy - tree_cpu), 1)},
                "actors": actors,
                "max_actor_rss_mb": max((a["max_rss_mb"] for a in actors), default=None),
                "tree_peak_rss_mb": round(self.tree_peak_mb, 1),
                "busiest_other_processes": others[:6],
                "processes_seen": len(self.procs), "samples": self.samples}


# --------------------------------------------------------------------------- runs


def predict_run(name: str, data: Path, model: Path, text_cols: str, out_dir: Path, *, engine: str,
                workers: int | None, image_dir: Path | None = None, batch_size: int | None = None,
                timeout: float = 900) -> dict:
    """One `python -m core predict` in a fresh STUDIO_HOME; its times, memory, output. A run
    that fails or outlives `timeout` (its process group killed) is reported as `failed`."""
    home = out_dir / name
    home.mkdir(parents=True)
    out = home / "predictions.csv"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(STUDIO_HOME=str(home), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "core", "predict", "--model", str(model), "--data", str(data),
               "--text-cols", text_cols, "--out", str(out), "--engine", engine]
    if image_dir is not None:
        command += ["--image-col", "image", "--image-dir", str(image_dir)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    log(f"{name}: {' '.join(command[2:])}")
    source = engine_hash()
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        for sig, pause in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            if proc.poll() is None:
                time.sleep(pause)

    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    for raw in proc.stderr:  # time-stamped as it arrives (the command flushes each line)
        lines.append((time.perf_counter() - started, raw.decode(errors="replace").rstrip()))
    code = proc.wait()
    watchdog.cancel()
    wall = time.perf_counter() - started
    memory = sampler.finish()
    memory["actors_expected"] = workers if engine == "ray" else 0
    (home / "stderr.log").write_text("\n".join(f"{t:8.2f} {line}" for t, line in lines) + "\n")
    result = {"engine": engine, "workers": workers, "wall_seconds": round(wall, 2), "output": str(out),
              "engine_source": source}
    if code != 0 or timed_out.is_set():
        tail = [line[-300:] for _, line in lines[-8:]]
        why = f"killed after {timeout:.0f} s" if timed_out.is_set() else f"exit status {code}"
        log(f"{name} FAILED ({why}); its stderr ends:\n" + "\n".join(tail))
        return {**result, "failed": why, "stderr_tail": tail, "memory": memory}
    if engine == "ray":
        start = next((t for t, line in lines if CLUSTER_START.search(line)), None)
        ready = next((t for t, line in lines if "Ray worker(s) on" in line), None)
        if start is None or ready is None:  # the engine's wording changed: no split of its time
            log(f"{name}: no 'joining/starting Ray' / 'N Ray worker(s) on' line in its stderr")
        else:
            result.update(process_start_seconds=round(start, 2), cluster_start_seconds=round(ready - start, 2),
                          after_cluster_seconds=round(wall - ready, 2),
                          workers_line=next(line for _, line in lines if "Ray worker(s) on" in line))
    result["memory"] = memory
    cluster = f" (cluster start {result['cluster_start_seconds']:.1f} s)" if "cluster_start_seconds" in result else ""
    log(f"{name}: {wall:.1f} s{cluster}, peak actor RSS {memory['max_actor_rss_mb']} MB")
    return result


def add_rates(result: dict, rows: int) -> None:
    result["rows"] = rows
    if "failed" in result:
        return
    result["rows_per_second"] = round(rows / result["wall_seconds"], 1)
    cpu = result["memory"]["cpu_seconds"]
    result["rows_per_cpu_second"] = round(rows / cpu["whole_tree"], 1) if cpu["whole_tree"] else None
    # cores the rest of the machine kept busy meanwhile: what this run could not have
    result["other_work_cores"] = round(cpu["rest_of_machine"] / result["wall_seconds"], 2)
    if "after_cluster_seconds" in result:
        result["rows_per_second_without_cluster_start"] = round(rows / result["after_cluster_seconds"], 1)


def compare(reference: Path, other: Path, input_cols: list[str]) -> dict:
    """Same rows (the input columns, in order), same predicted_label; what else differs."""
    import numpy as np
    import pandas as pd

    a = pd.read_csv(reference, dtype=str, keep_default_na=False)
    b = pd.read_csv(other, dtype=str, keep_default_na=False)
    same_shape = a.shape == b.shape and list(a.columns) == list(b.columns)
    out = {"rows": len(b), "same_columns": list(a.columns) == list(b.columns)}
    if len(a) != len(b):
        return {**out, "same_rows": False, "same_predicted_label": False, "identical": False}
    out["same_rows"] = bool(all((a[c] == b[c]).all() for c in input_cols if c in a and c in b))
    out["same_predicted_label"] = bool((a["predicted_label"] == b["predicted_label"]).all())
    out["predicted_label_mismatches"] = int((a["predicted_label"] != b["predicted_label"]).sum())
    conf_a = pd.to_numeric(a["confidence"], errors="coerce").to_numpy()
    conf_b = pd.to_numeric(b["confidence"], errors="coerce").to_numpy()
    both = ~np.isnan(conf_a) & ~np.isnan(conf_b)
    out["max_confidence_difference"] = float(np.abs(conf_a[both] - conf_b[both]).max()) if both.any() else None
    out["all_columns_identical"] = bool(same_shape and a.equals(b))
    out["identical"] = out["same_columns"] and out["same_rows"] and out["same_predicted_label"]
    return out


CLUSTER_PROBE = """
import json, time
t0 = time.perf_counter()
import ray
t1 = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
t2 = time.perf_counter()
@ray.remote
def ping():
    return 1
ray.get(ping.remote())
t3 = time.perf_counter()
cpus = ray.cluster_resources().get("CPU")
ray.shutdown()
t4 = time.perf_counter()
print(json.dumps({"import_seconds": t1 - t0, "init_seconds": t2 - t1, "first_task_seconds": t3 - t2,
                  "ready_seconds": t3 - t1, "shutdown_seconds": t4 - t3, "cpus": cpus}))
"""


def cluster_start(repeats: int) -> dict:
    """`ray.init(num_cpus=2)` until a first task has run, in a fresh process each time."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    runs = []
    for k in range(repeats):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CLUSTER_PROBE], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=300, check=False)
        if done.returncode != 0:
            raise SystemExit(f"ray.init probe failed:\n{done.stderr[-2000:]}")
        probe = json.loads(done.stdout.strip().splitlines()[-1])
        probe["process_seconds"] = time.perf_counter() - started
        runs.append({key: round(v, 2) for key, v in probe.items()})
        log(f"cluster start {k + 1}/{repeats}: ray.init {probe['init_seconds']:.1f} s, "
            f"+ first task {probe['first_task_seconds']:.1f} s")
    return {"runs": runs, **{f"median_{key}": round(statistics.median(r[key] for r in runs), 2)
                             for key in ("import_seconds", "init_seconds", "first_task_seconds", "ready_seconds")}}


def code_state() -> dict:
    """The commit measured, and the engine files changed since it (a run measures the working tree)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, text=True, capture_output=True, check=False)
        return done.stdout.rstrip("\n")

    changed = [line[3:] for line in git("status", "--porcelain", "--", "core").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_in_core": changed}


def engine_hash() -> str:
    """A hash of the engine's source as a run starts it (others may edit the tree meanwhile)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "core" / "inference").glob("*.py")) + [REPO / "core" / "data" / "shards.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


def path_summary(runs: dict) -> dict:
    """Scaling 1 -> 2 workers and ray vs local, for one data path."""
    ok = {key: run for key, run in runs.items() if "failed" not in run}
    one, two, local = ok.get("ray_1"), ok.get("ray_2"), runs["local"]
    out = {}
    if one and two:
        out["scaling_1_to_2_workers"] = ratio(two.get("rows_per_second_without_cluster_start"),
                                              one.get("rows_per_second_without_cluster_start"))
        out["scaling_1_to_2_workers_with_cluster_start"] = ratio(two["rows_per_second"], one["rows_per_second"])
    out["peak_rss_mb_per_worker"] = {key: run["memory"]["max_actor_rss_mb"] if key != "local"
                                      else run["memory"]["driver_peak_rss_mb"] for key, run in ok.items()}
    out["actor_cpu_seconds"] = {key: [a["cpu_seconds"] for a in run["memory"]["actors"]]
                                for key, run in ok.items() if key != "local"}
    out["other_work_cores"] = {key: run["other_work_cores"] for key, run in ok.items()}
    out["failed_runs"] = {key: run["failed"] for key, run in runs.items() if "failed" in run}
    for key, run in ok.items():
        if key != "local":
            out[f"{key}_over_local"] = ratio(run["rows_per_second"], local["rows_per_second"])
            out[f"{key}_over_local_without_cluster_start"] = ratio(run.get("rows_per_second_without_cluster_start"),
                                                                   local["rows_per_second"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "catalog_studio_bench_ray",
                        help="cache folder: bundles trained here, the generated data, and the runs (removed after)")
    parser.add_argument("--text-model", type=Path, help="an existing text bundle for the PriceRunner titles")
    parser.add_argument("--photo-model", type=Path, help="an existing text + photo bundle for the Flipkart rows")
    parser.add_argument("--rows", type=int, default=100_000, help="text rows (PriceRunner titles repeated)")
    parser.add_argument("--photos", type=int, default=2_000, help="photo rows (each its own photo file)")
    parser.add_argument("--workers", default="1,2", help="ray worker counts to run, comma-separated")
    parser.add_argument("--shards", type=int, default=1,
                        help="split each data set into N CSV shards (a folder) instead of one file")
    parser.add_argument("--batch-size", type=int, help="--batch-size of every run (default: each engine's)")
    parser.add_argument("--cluster-repeats", type=int, default=3, help="bare cluster starts timed")
    parser.add_argument("--skip-text", action="store_true")
    parser.add_argument("--skip-photos", action="store_true")
    parser.add_argument("--run-timeout", type=float, default=900,
                        help="seconds after which a run is killed and reported as failed")
    parser.add_argument("--keep", action="store_true", help="keep the runs' homes, outputs and stderr logs")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    args.home = args.home.resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    load_before = os.getloadavg()
    bench_started = time.perf_counter()

    try:
        import ray
    except ImportError:
        raise SystemExit("bench_ray needs Ray: .venv/bin/pip install -r requirements-scale.txt") from None

    code = code_state()
    paths = []
    models, data = {}, {}
    if not args.skip_text:
        bundle, seconds = text_bundle(args)
        csv, info = text_rows(args)
        models["text"] = {"bundle": str(bundle), "trained_seconds": None if seconds is None else round(seconds, 1)}
        data["text"] = info
        info["shards"] = args.shards
        csv = sharded(csv, args.shards)
        paths.append(("text", csv, bundle, info["text_cols"], None, ["bench_row", "Product Title"]))
    if not args.skip_photos:
        bundle, seconds = photo_bundle(args)
        csv, folder, info = photo_rows(args)
        models["photo"] = {"bundle": str(bundle), "trained_seconds": None if seconds is None else round(seconds, 1)}
        data["photo"] = info
        info["shards"] = args.shards
        csv = sharded(csv, args.shards)
        paths.append(("photo", csv, bundle, info["text_cols"], folder, ["bench_row", "product_name", "image"]))

    log(f"timing {args.cluster_repeats} bare local cluster starts")
    cluster = cluster_start(args.cluster_repeats)
    runs_dir = Path(tempfile.mkdtemp(prefix="runs-", dir=args.home))
    results: dict[str, dict] = {}
    try:
        for kind, csv, bundle, text_cols, folder, input_cols in paths:
            runs = {}
            rows = data[kind]["rows"]
            runs["local"] = predict_run(f"{kind}-local", csv, bundle, text_cols, runs_dir, engine="local",
                                        workers=None, image_dir=folder, batch_size=args.batch_size,
                                        timeout=args.run_timeout)
            if "failed" in runs["local"]:
                raise SystemExit(f"the local run (the reference) failed: {runs['local']['failed']}")
            for w in worker_counts:
                runs[f"ray_{w}"] = predict_run(f"{kind}-ray{w}", csv, bundle, text_cols, runs_dir, engine="ray",
                                               workers=w, image_dir=folder, batch_size=args.batch_size,
                                               timeout=args.run_timeout)
            for key, run in runs.items():
                add_rates(run, rows)
                if key != "local" and "failed" not in run:
                    run["vs_local"] = compare(Path(runs["local"]["output"]), Path(run["output"]), input_cols)
                    log(f"{kind} {key} vs local: {run['vs_local']}")
            results[kind] = {"runs": runs, "summary": path_summary(runs)}
    finally:
        if not args.keep:
            shutil.rmtree(runs_dir, ignore_errors=True)
        else:
            log(f"runs kept: {runs_dir}")
    if not args.keep:
        for kind in results.values():
            for run in kind["runs"].values():
                run.pop("output", None)

    identical = all(run.get("vs_local", {}).get("identical", False) for kind in results.values()
                    for key, run in kind["runs"].items() if key != "local")
    photo_scaling = results.get("photo", {}).get("summary", {}).get("scaling_1_to_2_workers")
    actor_peaks = [a["max_rss_mb"] for kind in results.values() for run in kind["runs"].values()
                   for a in run["memory"]["actors"]]
    result = {
        "cpu_count": os.cpu_count(),
        "ray_version": ray.__version__,
        "code": {**code, "uncommitted_in_core_after": code_state()["uncommitted_in_core"],
                 "engine_sources": sorted({run["engine_source"] for kind in results.values()
                                           for run in kind["runs"].values()}),
                 "note": "engine_sources: a hash of core/inference/*.py + core/data/shards.py as each run started; "
                         "one value: every run measured the same engine"},
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "protocol": (
            "each run is `python -m core predict --model M --data CSV --text-cols C [--image-col image "
            "--image-dir D] --out FILE.csv --engine local|ray [--workers N]` as a subprocess, timed from start to "
            "exit (Python start, imports, model load, reading, scoring, writing the CSV), in a fresh STUDIO_HOME, "
            "RAY_ADDRESS unset: each ray run starts and stops its own local cluster (the machine's CPUs). "
            "cluster_start_seconds: the run's own stderr lines 'joining Ray …' -> 'N Ray worker(s) "
            "on C CPU(s)' (ray.init with the runtime env that ships `core`); rows_per_second_without_cluster_start "
            "uses the time after that line (actors starting and loading the bundle included). Engine defaults: "
            "local scores a whole shard as one batch with TensorFlow's own threads; ray uses 256-row batches, one "
            "actor per worker, 1 TF thread each. Memory: the command's process tree polled every "
            f"{POLL_SECONDS} s in /proc; actors are the `ray::MapWorker(...)` processes (RSS counts pages shared "
            "with other processes, e.g. the object store; max_private_mb does not). CPU: user + system seconds per "
            "process of the tree from the same polls (the last poll's value: a process's final quarter second may "
            "be missed); rest_of_machine: the machine's busy CPU seconds (/proc/stat) during the run minus the "
            "tree's, i.e. other work on the shared cores; other_work_cores = that / wall seconds"),
        "cached": (
            "nothing between runs: each run has a fresh STUDIO_HOME, so its image-embedding cache starts empty; "
            "every photo row has its own file (a copy of one of the shared sample's photos + a trailing tag, so "
            "a distinct hash), so no photo is served from the cache within a run either and the backbone runs "
            "once per row. The bundles, the generated data and the OS page cache (photo files read before the "
            "runs) are shared by all runs alike. The bundle embeds the backbone, so no weights are downloaded."),
        "models": models,
        "data": data,
        "cluster_start": {**cluster, "what": "a fresh process: import ray; ray.init(num_cpus=2, "
                                             "include_dashboard=False) returns (init) + a first task's round trip "
                                             "(first_task: a worker process started); ready = init + first task"},
        "paths": results,
        "max_actor_rss_mb": max(actor_peaks, default=None),
        "outputs_identical": identical,
        "targets": {
            "photo_scaling_1_to_2_workers": {
                "target": TARGETS["photo_scaling_1_to_2_workers"], "measured": photo_scaling,
                "met": None if photo_scaling is None else photo_scaling >= TARGETS["photo_scaling_1_to_2_workers"],
                "measured_as": "rows/s of ray with 2 workers over 1 worker, after cluster start",
                "other_work_cores": results.get("photo", {}).get("summary", {}).get("other_work_cores")},
            "outputs_identical": {"target": True, "measured": identical, "met": identical},
        },
        "limits": (
            "One machine with 2 cores, shared with other work (other_work_cores per run, load averages). With 2 "
            "workers both cores run actors, so the driver (reading the shards, ordering, writing the CSV) and Ray's "
            "own processes (raylet, GCS, Ray Data's stats/autoscaling actors, block-metadata tasks: "
            "cpu_seconds.ray_processes) take their CPU from the actors; with 1 worker they use the idle core for "
            "free. Each actor also pays TensorFlow's import and the bundle's load (seconds of CPU, ~0.9-1.7 GB RSS) "
            "once, and each ray run a cluster start: fixed costs that a 2,000-photo job does not amortise on 2 "
            "cores, so the 1 -> 2 worker scaling rises with --photos. On a cheap text model the local engine "
            "(one process, the whole shard in one vectorised call) is faster than Ray on one machine: Ray pays off "
            "by adding machines. What still runs on one machine: the driver reads every shard and writes the "
            "output (a folder --out writes parts, but from the driver). Photos here are local files in the page "
            "cache; URLs would add downloads. RSS counts shared pages (the object store) in every process that "
            "touches them; max_private_mb does not."),
        "bench_seconds": round(time.perf_counter() - bench_started, 1),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
