"""Decoding images safely, and the one preprocessing every image model uses.

Every image that enters the project (catalogue rows, uploads, URLs) goes through
`open_image`, so the rules live in one place: RGB out, EXIF orientation applied,
transparency on white (product photos are shot on white), fully decoded so a
truncated file fails at import time rather than in the middle of training, and
huge images refused before their pixels are decoded (decompression bombs).

`letterbox` is the single image preprocessing shared by training, prediction and
explanations; `letterbox_box` gives the inverse geometry so a heatmap computed on
the model input can be mapped back onto the original photo.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.common.errors import InputError, one_line

__all__ = [
    "MAX_PIXELS",
    "ALLOWED_FORMATS",
    "ImageDecodeError",
    "open_image",
    "content_hash",
    "file_hash",
    "letterbox",
    "letterbox_box",
]

#: Images with more pixels than this are refused (decompression-bomb guard). Pillow's own
#: limit (~89 MP warning, ~179 MP error) is left untouched; ours is checked from the header.
MAX_PIXELS: int = 40_000_000

#: Formats we decode. Everything a shop photo can reasonably be; deliberately not EPS/PDF
#: (EPS would hand the file to Ghostscript if it happens to be installed).
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF", "ICO", "PPM", "TGA",
)

WHITE = (255, 255, 255)

ImageSource = Union[str, Path, bytes, bytearray, memoryview, IO[bytes]]


class ImageDecodeError(InputError):
    """An image that cannot be used. `reason` is the bare cause ("not an image", ...)
    so catalogue import can record it per row without the location prefix."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = one_line(reason)
        super().__init__(_prefix(what) + self.reason)



def _prefix(what: str) -> str:
    what = one_line(what)
    if not what:
        return ""
    return what + (" " if what.endswith(":") else ": ")


def _allowed_formats() -> list[str]:
    Image.init()  # registers every plugin; cheap after the first call
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height read from the header only, for the "too large" message when
    Pillow itself refused to open the file. Never decodes pixels."""
    prefix = data[:16]
    for name in _allowed_formats():
        factory, accept = Image.OPEN[name]
        try:
            if accept and not accept(prefix):
                continue
            im = factory(io.BytesIO(data), "")
            return im.size
        except Exception:  # noqa: BLE001 - any failure just means "unknown size"
            continue
    return None


def _too_large(size: tuple[int, int] | None, limit: int) -> str:
    mp = f"{limit / 1e6:g} MP"
    if size is None:
        return f"image too large, limit {mp}"
    return f"image too large ({size[0]}×{size[1]} px), limit {mp}"


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB; transparency composited onto white, 16-bit scaled (not clipped)."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.size and arr.max() > 255):
            arr = arr / 257.0
        elif mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _read_source(source: ImageSource, what: str) -> tuple[bytes, str]:
    """The file's bytes, plus a default `what` when the caller gave none."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), what or "image"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        # Name the path in the reason unless `what` already starts with it.
        where = f": {path}" if what else ""
        what = what or str(path)
        try:
            if not path.exists():
                raise ImageDecodeError(what, f"file not found{where}")
            if path.is_dir():
                raise ImageDecodeError(what, f"is a folder, not an image file{where}")
            return path.read_bytes(), what
        except ImageDecodeError:
            raise
        except OSError as exc:
            raise ImageDecodeError(what, f"cannot read file{where}: {exc.strerror or exc}") from exc
    if hasattr(source, "read"):  # an open binary file, e.g. Streamlit's UploadedFile
        try:
            if hasattr(source, "seek"):
                source.seek(0)
            data = source.read()
        except OSError as exc:
            raise ImageDecodeError(what or "image", f"cannot read: {exc}") from exc
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("open_image needs a binary file object, got text")
        return bytes(data), what or getattr(source, "name", "") or "image"
    raise TypeError(f"open_image: unsupported source type {type(source).__name__}")


def open_image(
    source: ImageSource, *, what: str = "", max_pixels: int | None = None
) -> Image.Image:
    """Decode `source` (path, bytes or binary file) into a fully loaded RGB image.

    Raises `ImageDecodeError` (an `InputError`) with a one-line message starting with
    `what` (e.g. "products.csv, row 12, column 'image'") for anything unusable: missing
    file, not an image, truncated/corrupt data, or more than `max_pixels` (default
    `MAX_PIXELS`) pixels. Global Pillow settings are not changed.
    """
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    data, what = _read_source(source, what)
    if not data:
        raise ImageDecodeError(what, "not an image (empty file)")
    try:
        # Pillow warns above its own limit and errors above twice that; make the warning
        # an error too (only inside this block) so nothing is decoded past the header.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_allowed_formats()) as im:
                width, height = im.size
                if width * height > limit:
                    raise ImageDecodeError(what, _too_large((width, height), limit))
                im.load()
                try:
                    oriented = ImageOps.exif_transpose(im)
                except Exception:  # noqa: BLE001 - broken EXIF must not lose a good photo
                    oriented = im.copy()
                rgb = _to_rgb(oriented)
                if rgb is im:
                    rgb = im.copy()
                rgb.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(what, _too_large(_header_size(data), limit)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(what, "not an image") from exc
    except MemoryError as exc:
        raise ImageDecodeError(what, "image too large to decode (out of memory)") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError) as exc:
        # Pillow reports truncation/corruption as OSError ("image file is truncated"),
        # SyntaxError ("broken PNG file"), ValueError ("Decompressed data too large") ...
        raise ImageDecodeError(what, f"truncated or corrupt ({one_line(exc) or type(exc).__name__})") from exc
    if rgb.mode != "RGB":  # defensive: _to_rgb always returns RGB
        raise ImageDecodeError(what, f"unsupported colour mode {rgb.mode}")
    return rgb


def content_hash(data: bytes) -> str:
    """SHA-256 hex of bytes: the identity of an upload or a cached file."""
    return hashlib.sha256(data).hexdigest()


def file_hash(path: str | Path) -> str:
    """SHA-256 hex of a file, streamed so large files don't sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def letterbox_box(width: int, height: int, size: int = 224) -> tuple[float, float, float, float]:
    """(left, top, w, h) of a width×height image inside the size×size letterboxed input.

    The image is scaled by size / max(width, height) and centred. Use it to crop a heatmap
    computed on the model input and resize the crop to the original photo (Grad-CAM).
    """
    if width <= 0 or height <= 0 or size <= 0:
        raise ValueError(f"letterbox_box: sizes must be positive, got {width}×{height} → {size}")
    side = max(width, height)
    # written so that exact cases stay exact in floating point (no 224.00000000000003)
    return (
        size * (side - width) / (2 * side),
        size * (side - height) / (2 * side),
        size * width / side,
        size * height / side,
    )


def letterbox(img: Image.Image, size: int = 224) -> np.ndarray:
    """Pad to a white square (centred, nothing cropped) and resize to size×size.

    Returns float32 (size, size, 3) in 0..255. Cropping would cut off parts of products
    on white backgrounds; white padding blends in. The geometry is `letterbox_box`'s
    (to within half an input pixel).
    """
    if size <= 0:
        raise ValueError(f"letterbox: size must be positive, got {size}")
    img = _to_rgb(img)
    w, h = img.size
    side = max(w, h)
    # Very large photos: shrink first so the padded square stays small in memory.
    # Proportions are kept, so the geometry matches letterbox_box to sub-pixel accuracy.
    cap = 4 * size
    if side > cap:
        factor = cap / side
        img = img.resize(
            (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.LANCZOS
        )
        w, h = img.size
        side = max(w, h)
    if w != h:
        square = Image.new("RGB", (side, side), WHITE)
        square.paste(img, ((side - w) // 2, (side - h) // 2))
    else:
        square = img
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square, dtype=np.float32).copy()
