"""Peak memory of a catalogue import and of a batch, against the number of photos; prints JSON.

    .venv/bin/python bench/bench_memory.py [--counts 16 160] [--size 3000] [--no-batch] [--out FILE]

For each count N, N large photos (SIZE×SIZE, mostly flat colour with one coloured square,
so the PNG files are small but each decodes to SIZE²×3 bytes) and a labelled CSV are
written to a temporary folder. Then, each in its own process with a fresh STUDIO_HOME:

- import: `python -m core import --data … --quiet` (what an admin runs);
- batch (unless --no-batch): `core.studio.batch.score_batch` on the same CSV with a tiny model
  (trained once here like tests/app_home.py, `weights=None`: no download).

The peak resident memory of each process is read from `os.wait4` (ru_maxrss of that child
alone). Issue 10 item 3: the peaks must not grow with N — the report gives each peak, the
ratio largest/smallest count, and the decoded size of all photos for scale (before the fix
every decoded photo stayed in memory until the end: ~27 MB per 3000×3000 photo).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit  # bench/ is the script's folder

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Kitchen", "Toys", "Watches")
WORDS = {"Kitchen": "ceramic mug steel pan", "Toys": "plush bear puzzle blocks", "Watches": "dial strap analog chrono"}

BATCH_SCRIPT = """
import sys
from pathlib import Path
from core.studio.auth import User
from core.studio.batch import score_batch
from core.data.catalogue import load_catalogue
from core.models.classifier import Classifier
from core.studio.store import Store
csv_path, bundle = Path(sys.argv[1]), Path(sys.argv[2])
catalogue = load_catalogue(csv_path, text_cols=["title"], image_col="image", image_dir=csv_path.parent / "images")
result = score_batch(Store(), Classifier.load(bundle), User.system("bench"), catalogue)
print(result.scored)
"""

TRAIN_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[2]) / "tests"))
from helpers.app_home import train_tiny_bundle
print(train_tiny_bundle(Path(sys.argv[1])))
"""


def write_photos(folder: Path, n: int, size: int) -> Path:
    """`folder/products.csv` + `folder/images/p000.png…`: n labelled rows, distinct photos."""
    from PIL import Image, ImageDraw

    images = folder / "images"
    images.mkdir(parents=True)
    with open(folder / "products.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["title", "category", "image"])
        for i in range(n):
            label = CLASSES[i % len(CLASSES)]
            photo = Image.new("RGB", (size, size), (235, 235, 235))
            side = size // 4
            x = (i * 97) % (size - side)
            ImageDraw.Draw(photo).rectangle((x, side, x + side, 2 * side), fill=(40 + i % 200, 90, 200 - i % 150))
            photo.save(images / f"p{i:04d}.png", "PNG")
            writer.writerow([f"{WORDS[label]} item {i}", label, f"p{i:04d}.png"])
    return folder / "products.csv"


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(peak RSS of the child in MB, seconds, its last output line); raises on failure."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out_file, stderr=err_file, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (Popen.wait would reap it first)
        seconds = time.perf_counter() - started
        code = proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0), err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed ({code}): {err.strip()[-800:]}")
    return usage.ru_maxrss / 1024, seconds, (out.strip().splitlines() or [""])[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[16, 160])
    parser.add_argument("--size", type=int, default=3000)
    parser.add_argument("--no-batch", action="store_true", help="measure the import only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    report: dict = {"size": args.size, "counts": args.counts,
                    "decoded_mb_per_photo": round(args.size * args.size * 3 / 2**20, 1), "import": {}, "batch": {}}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        base_env = {k: v for k, v in os.environ.items() if k != "STUDIO_HOME"}
        base_env["PYTHONPATH"] = str(REPO)
        bundle = None
        if not args.no_batch:
            env = {**base_env, "STUDIO_HOME": str(root / "train-home")}
            _, seconds, line = peak_rss_mb([sys.executable, "-c", TRAIN_SCRIPT, str(root / "model"), str(REPO)], env)
            bundle = line
            report["batch"]["train_seconds"] = round(seconds, 1)
        for n in args.counts:
            t = time.perf_counter()
            csv_path = write_photos(root / f"photos-{n}", n, args.size)
            files_mb = sum(p.stat().st_size for p in (csv_path.parent / "images").iterdir()) / 2**20
            write_s = time.perf_counter() - t
            env = {**base_env, "STUDIO_HOME": str(root / f"import-home-{n}")}
            peak, seconds, _ = peak_rss_mb([sys.executable, "-m", "core", "import", "--data", str(csv_path),
                                            "--text-cols", "title", "--label-col", "category", "--image-col", "image",
                                            "--image-dir", str(csv_path.parent / "images"), "--quiet"], env)
            report["import"][str(n)] = {"peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1),
                                        "files_mb": round(files_mb, 2), "write_photos_seconds": round(write_s, 1),
                                        "decoded_all_mb": round(n * report["decoded_mb_per_photo"], 1)}
            if bundle:
                env = {**base_env, "STUDIO_HOME": str(root / f"batch-home-{n}")}
                peak, seconds, scored = peak_rss_mb([sys.executable, "-c", BATCH_SCRIPT, str(csv_path), bundle], env)
                report["batch"][str(n)] = {"peak_rss_mb": round(peak, 1), "seconds": round(seconds, 1),
                                           "scored": int(scored)}
            print(f"{n} photos done", file=sys.stderr)
    lo, hi = str(min(args.counts)), str(max(args.counts))
    for part in ("import", "batch"):
        if lo in report[part] and hi in report[part]:
            report[part]["ratio_peak"] = round(report[part][hi]["peak_rss_mb"] / report[part][lo]["peak_rss_mb"], 3)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
