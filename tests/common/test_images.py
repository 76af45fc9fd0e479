"""core.common.images: safe decoding and the shared letterbox preprocessing."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.common.errors import InputError
from core.common.images import (
    MAX_PIXELS,
    ImageDecodeError,
    content_hash,
    file_hash,
    letterbox,
    letterbox_box,
    open_image,
)

WHAT = "products.csv, row 12, column 'image'"


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width×height (1-bit grey) but holds almost no data: a bomb
    as far as the header goes, a few dozen bytes on disk."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def assert_one_line_error(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert isinstance(exc.value, InputError)
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


# --------------------------------------------------------------------------- modes


def test_rgba_transparency_becomes_white():
    img = Image.new("RGBA", (20, 10), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((5, 5), (0, 0, 255, 255))  # one opaque blue pixel
    img.putpixel((6, 5), (255, 0, 0, 128))  # half-transparent red
    out = open_image(encode(img))
    assert out.mode == "RGB" and out.size == (20, 10)
    assert out.getpixel((0, 0)) == (255, 255, 255)  # not black, not red
    assert out.getpixel((5, 5)) == (0, 0, 255)
    r, g, b = out.getpixel((6, 5))
    assert r == 255 and 120 <= g <= 135 and 120 <= b <= 135


def test_la_and_palette_transparency_become_white():
    la = Image.new("LA", (8, 8), (0, 0))
    assert open_image(encode(la)).getpixel((3, 3)) == (255, 255, 255)

    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0  # index 0 (black) is transparent
    out = open_image(encode(pal, transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (200, 10, 10)


def test_cmyk_jpeg_and_16bit_grey_png():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    out = open_image(encode(cmyk, "JPEG", quality=95))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60

    grey16 = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))  # 50 % grey in 16 bit
    assert grey16.mode.startswith("I;16")
    out = open_image(encode(grey16))
    # Pillow's own convert would clip 32896 to 255 (white); we scale.
    assert all(120 <= c <= 135 for c in out.getpixel((4, 4)))


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = open_image(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.size == (20, 40)  # portrait after rotation
    top, bottom = out.getpixel((10, 5)), out.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_image_is_fully_decoded_before_returning(tmp_path: Path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(Image.new("RGB", (32, 32), (10, 200, 10)), "JPEG"))
    out = open_image(path)
    path.unlink()  # the returned image must not need the file any more
    assert out.getpixel((16, 16))[1] > 180
    assert np.asarray(out).shape == (32, 32, 3)


# --------------------------------------------------------------------------- failures


def test_truncated_jpeg_fails_with_location():
    data = encode(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(ImageDecodeError) as exc:
        open_image(data[: len(data) // 2], what=WHAT)
    msg = assert_one_line_error(exc, "truncated or corrupt")
    assert msg.startswith(WHAT + ": ")
    assert exc.value.reason.startswith("truncated or corrupt")


def test_random_bytes_and_empty_are_not_images():
    rng = np.random.default_rng(0)
    with pytest.raises(ImageDecodeError) as exc:
        open_image(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), what=WHAT)
    assert_one_line_error(exc, WHAT, "not an image")
    with pytest.raises(ImageDecodeError) as exc:
        open_image(b"", what=WHAT)
    assert_one_line_error(exc, "not an image")


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(ImageDecodeError) as exc:
        open_image(tmp_path / "nope.jpg", what=WHAT)
    assert_one_line_error(exc, WHAT, "file not found", "nope.jpg")
    with pytest.raises(ImageDecodeError) as exc:
        open_image(tmp_path)
    assert_one_line_error(exc, "folder")


def test_text_file_is_not_an_image(tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a png\n")
    with pytest.raises(ImageDecodeError) as exc:
        open_image(str(path))
    msg = assert_one_line_error(exc, "not an image")
    assert msg.startswith(str(path))  # without `what`, the path is the location


@pytest.mark.parametrize(
    "width,height",
    [
        (7000, 7000),  # 49 MP: under Pillow's own limit, over ours
        (10000, 10000),  # 100 MP: Pillow would only warn
        (100000, 100000),  # 10 GP: Pillow refuses in Image.open
    ],
)
def test_decompression_bomb_is_refused_from_the_header(width: int, height: int):
    filters_before = list(warnings.filters)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    data = png_header_only(width, height)
    assert len(data) < 200
    with pytest.raises(ImageDecodeError) as exc:
        open_image(data, what=WHAT)
    assert_one_line_error(exc, WHAT, f"image too large ({width}×{height} px), limit 40 MP")
    # no global state changed for other code
    assert Image.MAX_IMAGE_PIXELS == pillow_limit
    assert list(warnings.filters) == filters_before


def test_max_pixels_override():
    data = encode(Image.new("RGB", (100, 100), "white"))
    assert open_image(data).size == (100, 100)
    with pytest.raises(ImageDecodeError, match=r"image too large \(100×100 px\)"):
        open_image(data, max_pixels=5_000)
    assert MAX_PIXELS == 40_000_000


def test_hashes(tmp_path: Path):
    data = b"catalog studio"
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert content_hash(data) == expected
    assert file_hash(path) == expected
    assert content_hash(b"other") != expected


# --------------------------------------------------------------------------- letterbox


def red_on_white_check(arr: np.ndarray, box: tuple[float, float, float, float], margin: float = 1.5):
    """Pixels well inside the box are red, pixels well outside are white."""
    size = arr.shape[0]
    left, top, w, h = box
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    inside = (xs > left + margin) & (xs < left + w - margin) & (ys > top + margin) & (ys < top + h - margin)
    outside = (xs < left - margin) | (xs > left + w + margin) | (ys < top - margin) | (ys > top + h + margin)
    assert inside.any()
    red = arr[inside]
    assert (red[:, 0] > 240).all() and (red[:, 1:] < 15).all()
    if outside.any():
        assert (arr[outside] > 240).all()


@pytest.mark.parametrize(
    "width,height,size",
    [(100, 50, 224), (50, 100, 224), (37, 91, 64), (300, 301, 224), (1000, 100, 128), (999, 40, 224), (2000, 500, 96), (5, 5, 32)],
)
def test_letterbox_matches_letterbox_box(width: int, height: int, size: int):
    img = Image.new("RGB", (width, height), (255, 0, 0))
    arr = letterbox(img, size)
    assert arr.shape == (size, size, 3) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 255.0
    box = letterbox_box(width, height, size)
    red_on_white_check(arr, box)


def test_letterbox_box_values():
    assert letterbox_box(100, 50, 224) == (0.0, 56.0, 224.0, 112.0)
    assert letterbox_box(50, 100, 224) == (56.0, 0.0, 112.0, 224.0)
    assert letterbox_box(10, 10, 224) == (0.0, 0.0, 224.0, 224.0)
    with pytest.raises(ValueError):
        letterbox_box(0, 10)


def test_letterbox_keeps_whole_product_and_composites_alpha():
    # a product touching the left and right borders must not be cropped
    img = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    img.paste((0, 128, 0, 255), (0, 40, 200, 60))
    arr = letterbox(img, 100)
    row = arr[50]
    assert row[1, 1] > 100 and row[98, 1] > 100 and row[1, 0] < 30  # green at both edges
    assert (arr[5] > 240).all()  # padding and transparency are white, not black


def test_modules_import_without_heavy_dependencies():
    code = (
        "import sys, core.common.images, core.data.catalogue; "
        "bad = [m for m in ('tensorflow', 'keras', 'streamlit', 'tqdm') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
