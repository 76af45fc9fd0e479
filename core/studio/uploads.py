"""Uploaded product photos, re-encoded and stored once by content hash.

The same photo uploaded twice (or in two batches) is one file and one `images` row;
products point at it by hash. Files are written before the database rows that name
them (temp file + rename), so a row never points at a half-written file; a file whose
rows were rolled back is harmless and reused by the next upload of it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils
from PIL import Image

from core.common.files import atomic_write_bytes
from core.common.images import content_hash, open_image
from core.common.settings import get_settings
from core.studio.store import utc_now

# MPO (phone cameras: a JPEG with extra frames) is kept as .jpg so browsers and st.image know it
SAVE_AS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
           "TIFF": ".tif"}


@dataclass(frozen=True)
class StoredImage:
    hash: str
    path: Path
    format: str
    width: int
    height: int
    bytes: int
    # decoded RGB, ready for the model; None once dropped (`without_image`): a batch or an
    # import keeps only the hash and metadata of each row, so memory does not grow per photo
    image: Image.Image | None = None

    def without_image(self) -> "StoredImage":
        """The same record without the decoded pixels (a full-size photo is ~30 MB decoded)."""
        from dataclasses import replace

        return replace(self, image=None)

    def open(self) -> Image.Image:
        """The decoded image: the one kept, else re-read from the stored file."""
        return self.image if self.image is not None else open_image(self.path, what=self.path.name)

    def row(self) -> dict:
        return {"hash": self.hash, "path": str(self.path.relative_to(images_dir().parent)), "format": self.format,
                "width": self.width, "height": self.height, "bytes": self.bytes, "created_at": utc_now()}


def images_dir() -> Path:
    return get_settings().data_dir / "images"


def image_path(hash_: str) -> Path | None:
    """The stored file of an image hash, whatever its extension (None if missing)."""
    folder = images_dir() / hash_[:2]
    matches = sorted(folder.glob(f"{hash_}.*")) if folder.is_dir() else []
    return matches[0] if matches else None


#: what a stored photo is re-encoded as: JPEG stays a (high-quality) JPEG, the rest a lossless PNG
STORE_FORMAT = {"JPEG": "JPEG", "MPO": "JPEG", "WEBP": "JPEG"}
JPEG_QUALITY = 95


def clean_image_bytes(image: Image.Image, source_format: str) -> tuple[bytes, str]:
    """`image` (decoded, EXIF orientation applied) encoded afresh, and its format: nothing of
    the uploaded file survives but its pixels — no bytes appended after the image (a zip,
    a script), no EXIF (GPS position), no extra frames. The same pixels always give the same
    bytes, so the same photo uploaded twice still has one hash."""
    fmt = STORE_FORMAT.get(source_format.upper(), "PNG")
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue(), fmt


def store_image(data: bytes, *, what: str = "image") -> StoredImage:
    """Check `data` is a usable photo (InputError otherwise, nothing written) and keep it,
    re-encoded (`clean_image_bytes`), under the hash of what is stored: the `images` row,
    the file name and a product's `content_key` all name the same bytes."""
    image = open_image(data, what=what)
    with Image.open(io.BytesIO(data)) as original:
        source_format = (original.format or "PNG").upper()
    clean, fmt = clean_image_bytes(image, source_format)
    digest = content_hash(clean)
    target = images_dir() / digest[:2] / f"{digest}{SAVE_AS[fmt]}"
    existing = image_path(digest)
    if existing is None:
        existing = atomic_write_bytes(target, clean, prefix=".upload-")
    return StoredImage(digest, existing, fmt, image.width, image.height, len(clean), image)


def store_image_file(path: str | Path, *, what: str = "") -> StoredImage:
    path = Path(path)
    return store_image(path.read_bytes(), what=what or path.name)


def record_image(db: sqlite_utils.Database, stored: StoredImage) -> str:
    """The `images` row of a stored file (inside the caller's transaction)."""
    db["images"].insert(stored.row(), ignore=True)
    return stored.hash
