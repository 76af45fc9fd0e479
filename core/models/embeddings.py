"""Image embeddings, cached by image content and backbone so that retraining never
runs the backbone twice on the same photo.

The cache is one SQLite file (stdlib sqlite3, WAL): safe with several processes,
and a single file rather than thousands of tiny .npy files.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from core.common.images import file_hash, letterbox, open_image
from core.common.settings import get_settings


class EmbeddingCache:
    """key -> float32 vector. Keys are "<backbone key>:<sha256 of the image file>"."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else get_settings().cache_dir / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock, closing(self._connect()) as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                for key, _dim, blob in db.execute(f"SELECT key, dim, vec FROM embeddings WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype="float32").copy()
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        rows = [(k, int(v.shape[-1]), np.asarray(v, dtype="float32").tobytes()) for k, v in items.items()]
        with self._lock, closing(self._connect()) as db, db:
            db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)


def load_model_input(path: str | Path, *, flip: bool = False) -> np.ndarray:
    """Decode + letterbox one image file into the backbone's raw 0..255 input."""
    array = letterbox(open_image(Path(path)))
    return array[:, ::-1] if flip else array


def embed_images(
    paths: Sequence[Path | None], encode: Callable[[np.ndarray], np.ndarray], dim: int, backbone_key: str, *,
    batch_size: int = 32, cache: EmbeddingCache | None = None, flip: bool = False, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings for each path (zeros where there is no usable image) and a mask of
    which rows have one. `encode` maps a (n, 224, 224, 3) batch to (n, dim).
    Unreadable images count as absent rather than failing a run: catalogue import
    has already reported them."""
    cache = cache or EmbeddingCache()
    out = np.zeros((len(paths), dim), dtype="float32")
    present = np.zeros(len(paths), dtype=bool)
    keys: dict[int, str] = {}
    for i, p in enumerate(paths):
        if p is not None and Path(p).is_file():
            keys[i] = f"{backbone_key}{':flip' if flip else ''}:{file_hash(p)}"
    cached = cache.get_many(sorted(set(keys.values())))
    todo = [i for i, k in keys.items() if k not in cached]
    for i, k in keys.items():
        if k in cached:
            out[i], present[i] = cached[k], True

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="image embeddings", unit="img")
    for start in range(0, len(todo), batch_size):
        batch, rows = [], []
        for i in todo[start:start + batch_size]:
            try:
                batch.append(load_model_input(paths[i], flip=flip))
                rows.append(i)
            except Exception:  # noqa: BLE001 - an unreadable image is an absent image
                continue
        if batch:
            vectors = np.asarray(encode(np.stack(batch)), dtype="float32")
            out[rows], present[rows] = vectors, True
            cache.put_many({keys[i]: v for i, v in zip(rows, vectors)})
        if bar is not None:
            bar.update(len(todo[start:start + batch_size]))
    if bar is not None:
        bar.close()
    return out, present
