"""Generated product catalogues for tests: learnable on purpose — each class has its own
words (in title and description) and its own dominant colour (a filled shape on a white
background), so model tests can assert that a tiny model beats chance from text alone or
image alone. Everything is offline and written under the caller's folder."""

from __future__ import annotations

import colorsys
import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw

# --------------------------------------------------------------------------- catalogue

#: Built-in classes: distinctive words and a distinctive colour each.
CLASS_SPECS: dict[str, tuple[tuple[str, ...], tuple[int, int, int]]] = {
    "Watches": (("watch", "dial", "strap", "chronograph", "wrist", "analog"), (220, 40, 40)),
    "Kitchen": (("skillet", "cookware", "ladle", "nonstick", "kettle", "saucepan"), (40, 170, 60)),
    "Toys": (("puzzle", "doll", "blocks", "plush", "toddler", "playset"), (40, 70, 210)),
    "Computers": (("laptop", "keyboard", "usb", "mouse", "ssd", "monitor"), (230, 200, 30)),
    "Beauty": (("lipstick", "serum", "moisturizer", "fragrance", "mascara", "lotion"), (200, 50, 200)),
    "Bedding": (("bedsheet", "pillow", "duvet", "quilt", "blanket", "mattress"), (40, 190, 200)),
    "Garden": (("shovel", "hose", "planter", "seeds", "trowel", "lawn"), (240, 130, 20)),
    "Books": (("novel", "paperback", "author", "chapter", "hardcover", "edition"), (110, 70, 30)),
}
DEFAULT_CLASSES = ("Watches", "Kitchen", "Toys")
FILLER = ("premium", "quality", "great", "value", "everyday", "use", "new", "classic", "design")
BRANDS = ("Acme", "Zenith", "Orion", "Nova", "Vega", "Atlas")


def class_spec(name: str, index: int, total: int) -> tuple[tuple[str, ...], tuple[int, int, int]]:
    """Words and colour for a class: built-in ones, or generated from the name."""
    if name in CLASS_SPECS:
        return CLASS_SPECS[name]
    slug = "".join(ch for ch in name.lower() if ch.isalnum()) or f"class{index}"
    words = tuple(f"{slug}{suffix}" for suffix in ("ix", "or", "um", "ex", "ar", "on"))
    r, g, b = colorsys.hsv_to_rgb(index / max(total, 1), 0.85, 0.9)
    return words, (int(r * 255), int(g * 255), int(b * 255))


def draw_product(
    colour: Sequence[int], size: tuple[int, int], rng: random.Random, mode: str = "RGB"
) -> Image.Image:
    """A product shot: a shape in `colour` (± a little jitter) on white."""
    w, h = size
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    jitter = [max(0, min(255, c + rng.randint(-15, 15))) for c in colour]
    x0, y0 = rng.randint(0, w // 6), rng.randint(0, h // 6)
    x1, y1 = w - 1 - rng.randint(0, w // 6), h - 1 - rng.randint(0, h // 6)
    if rng.random() < 0.5:
        draw.ellipse((x0, y0, x1, y1), fill=tuple(jitter))
    else:
        draw.rectangle((x0, y0, x1, y1), fill=tuple(jitter))
    return img.convert(mode) if mode != "RGB" else img


@dataclass
class SyntheticCatalogue:
    """What `make_catalogue` wrote. `load_kwargs` maps it for `load_catalogue`."""

    csv_path: Path
    image_dir: Path
    classes: list[str]
    colours: dict[str, tuple[int, int, int]]
    words: dict[str, tuple[str, ...]]
    rows: list[dict[str, str]]  # as written to the CSV, in order (row 1 = rows[0])
    labels: list[str]  # the class of each row, also when written as a tree
    missing_rows: list[int] = field(default_factory=list)  # 1-based rows without an image file
    load_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        """Expected model text per row (title. description)."""
        return [f"{r['title']}. {r['description']}" for r in self.rows]


def write_catalogue(
    root: Path,
    *,
    n_per_class: int = 8,
    classes: Sequence[str] = DEFAULT_CLASSES,
    with_images: bool = True,
    image_format: str = "png",
    image_size: tuple[int, int] = (48, 40),
    label_format: str = "plain",
    header_spaces: bool = False,
    missing_images: int = 0,
    absolute_image_paths: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    name: str = "products.csv",
) -> SyntheticCatalogue:
    """Write `root/name` and `root/images/*` and describe them.

    Columns: title, description, category, image. `label_format="tree"` writes the
    category Flipkart-style ('["Watches >> Sub 1 >> Acme watch ..."]', use label level 1).
    `header_spaces=True` prefixes every column name but the first with a space (like the
    PriceRunner file). `missing_images=k` leaves the image files of k rows unwritten
    (their rows are in `missing_rows`). Image sizes vary around `image_size` (aspect ratio
    changes too); formats: png or jpeg. Deterministic for a given seed.
    """
    if label_format not in ("plain", "tree"):
        raise ValueError("label_format must be 'plain' or 'tree'")
    fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}[image_format.lower()]
    ext = ".png" if fmt == "PNG" else ".jpg"
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    image_dir = root / "images"
    if with_images:
        image_dir.mkdir(exist_ok=True)

    specs = {c: class_spec(c, i, len(classes)) for i, c in enumerate(classes)}
    plan = [(c, k) for c in classes for k in range(n_per_class)]
    if shuffle:
        rng.shuffle(plan)

    rows: list[dict[str, str]] = []
    labels: list[str] = []
    for idx, (cls, k) in enumerate(plan):
        words, colour = specs[cls]
        brand = rng.choice(BRANDS)
        w1, w2, w3, w4 = rng.sample(words, 4)
        title = f"{brand} {w1} {w2} model {cls[:2].upper()}{idx:04d}"
        description = (
            f"{rng.choice(FILLER).capitalize()} {w3} with {w4} and {rng.choice(FILLER)} "
            f"{rng.choice(FILLER)} finish"
        )
        if label_format == "tree":
            category = f'["{cls} >> Sub {k % 3 + 1} >> {title[:20]}..."]'
        else:
            category = cls
        image_name = f"img_{idx:04d}{ext}" if with_images else ""
        rows.append({"title": title, "description": description, "category": category, "image": image_name})
        labels.append(cls)

    missing_rows: list[int] = []
    if with_images and missing_images:
        step = max(1, len(rows) // missing_images)
        missing_rows = [i * step + 1 for i in range(missing_images)][: len(rows)]
    if with_images:
        for i, row in enumerate(rows, start=1):
            if i in missing_rows:
                continue
            w = max(4, image_size[0] + rng.randint(-image_size[0] // 4, image_size[0] // 4))
            h = max(4, image_size[1] + rng.randint(-image_size[1] // 4, image_size[1] // 4))
            img = draw_product(specs[labels[i - 1]][1], (w, h), rng)
            img.save(image_dir / row["image"], fmt, **({"quality": 92} if fmt == "JPEG" else {}))
            if absolute_image_paths:
                row["image"] = str((image_dir / row["image"]).resolve())
        if absolute_image_paths:
            for i in missing_rows:
                rows[i - 1]["image"] = str((image_dir / rows[i - 1]["image"]).resolve())

    columns = ["title", "description", "category", "image"]
    header = [columns[0]] + [(" " + c if header_spaces else c) for c in columns[1:]]
    csv_path = root / name
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow([row[c] for c in columns])

    load_kwargs: dict[str, Any] = {
        "text_cols": ["title", "description"],
        "label_col": "category",
        "label_level": 1 if label_format == "tree" else None,
        "image_col": "image" if with_images else None,
        "image_dir": image_dir if with_images else None,
    }
    return SyntheticCatalogue(
        csv_path=csv_path,
        image_dir=image_dir,
        classes=sorted(classes),
        colours={c: specs[c][1] for c in classes},
        words={c: specs[c][0] for c in classes},
        rows=rows,
        labels=labels,
        missing_rows=missing_rows,
        load_kwargs=load_kwargs,
    )


# article -> (master, sub): two subtrees share a sub-level name ("Care"), which the model
# must keep apart as "Fashion >> Care" and "Home >> Care"
TREE = {"Watches": ("Fashion", "Accessories"), "Beauty": ("Fashion", "Care"), "Kitchen": ("Home", "Cooking"),
        "Bedding": ("Home", "Care"), "Toys": ("Kids", "Play"), "Books": ("Kids", "Reading")}


def _tree_title(rng: random.Random, article: str) -> str:
    words = CLASS_SPECS[article][0]
    return " ".join(rng.sample(words, 3) + rng.sample(FILLER, 2) + [rng.choice(BRANDS)])


def write_tree_csv(path: Path, n_per_leaf: int, seed: int, *, partial: int = 0, rare: bool = False) -> Path:
    """master,sub,article columns; `partial` rows per leaf know only the top level; `rare`
    adds a leaf seen once (it must back off to its parent)."""
    rng = random.Random(seed)
    rows = []
    for article, (master, sub) in TREE.items():
        rows += [[_tree_title(rng, article), master, sub, article] for _ in range(n_per_leaf)]
        rows += [[_tree_title(rng, article), master, "", ""] for _ in range(partial)]
    if rare:
        rows.append([_tree_title(rng, "Kitchen") + " teapot", "Home", "Cooking", "Teapots"])
    rng.shuffle(rows)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["title", "master", "sub", "article"])
        writer.writerows(rows)
    return path


