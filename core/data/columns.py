"""Which column of an uploaded catalogue is which: one guesser for every page that maps a
CSV (Batch, Models → Import), so their defaults cannot drift apart.

The guess reads the values, not only the header: real exports name columns
`product_category_tree`, `productDisplayName` or `' Category Label'`, and a header alone
cannot tell a 7-value category from a 400-value brand. The user always confirms the
mapping on the page; a guess only has to be a sensible default:

* image: values that look like image file names or image URLs;
* id: a unique, short, space-free column whose name says id (uniq_id, Product ID, sku…),
  or a unique numeric column;
* label: a text column with few distinct values for the number of rows (a category
  tree such as Flipkart's counts at level 1), never a number, a date, a yes/no flag or
  free text; a name like "category" or "label" wins ties, then the coarsest column;
* text: titles and descriptions — free text, mostly distinct, several words — with
  name/title columns first, never a URL, a JSON blob or the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

from core.common.category_path import path_parts
from core.data.category_tree import parse_category_tree

__all__ = ["ColumnGuess", "ColumnStats", "guess_columns", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff")
_IMAGE_VALUE = re.compile(r"\.(?:%s)(?:[?#].*)?$" % "|".join(IMAGE_EXTENSIONS), re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?(?:\d+(?:[.,]\d+)?|\.\d+)(?:[eE][-+]?\d+)?$")
_INTEGER = re.compile(r"^\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?.*)?$|^\d{1,2}/\d{1,2}/\d{2,4}$")
_BOOLEAN = {"true", "false", "yes", "no", "y", "n", "0", "1", "t", "f"}
_TREE_SEP = ">>"

ID_WORDS = {"id", "uid", "uuid", "pid", "sku", "ean", "upc", "asin", "gtin", "key"}
LABEL_WORDS = {"label", "category", "categories", "class", "target", "type", "genre", "department", "tag",
               "categ", "classification", "taxonomy", "segment", "family"}
TITLE_WORDS = {"title", "name", "displayname", "productdisplayname", "headline"}
TEXT_WORDS = TITLE_WORDS | {"description", "desc", "text", "summary", "details", "detail", "body", "about",
                            "features", "bullets", "content"}
IMAGE_WORDS = {"image", "images", "img", "photo", "photos", "picture", "pic", "file", "filename", "path", "thumbnail"}

MAX_LABEL_CLASSES = 1000
SAMPLE_ROWS = 20_000  # statistics on at most this many rows: bounded time for any upload


def name_words(column: str) -> set[str]:
    """The words of a column name: 'product_category_tree' → {product, category, tree},
    'productDisplayName' → {product, display, name, productdisplayname}."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(column).strip())
    words = {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w}
    whole = re.sub(r"[^a-z0-9]", "", str(column).lower())
    return words | ({whole} if whole else set())


@dataclass
class ColumnStats:
    """What the values of one column look like (on the non-empty cells)."""

    name: str
    filled: float          # share of non-empty cells
    distinct: int          # distinct non-empty values
    distinct_ratio: float  # distinct / non-empty
    mean_length: float
    mean_words: float
    numeric: float         # shares of the non-empty cells that look like…
    integer: float
    date: float
    boolean: bool          # at most two distinct values, all yes/no-like
    url: float
    image: float
    json: float
    spaced: float          # …contain whitespace
    tree: float            # …are category trees 'A >> B'
    tree_level1: int       # distinct level-1 values of the trees
    top_share: float
    tree_depth: int = 0    # the deepest level of the trees that still groups products (see _tree_depth)       # share of the most frequent value

    @property
    def words(self) -> set[str]:
        return name_words(self.name)


def column_stats(name: str, values: pd.Series) -> ColumnStats:
    """ColumnStats of one column (values as read by `read_csv`: strings)."""
    text = values.astype(str).str.strip()
    cells = text[text != ""]
    n = len(cells)
    if n == 0:
        return ColumnStats(name, 0.0, 0, 0.0, 0.0, 0.0, 0, 0, 0, False, 0, 0, 0, 0, 0, 0, 1.0)
    counts = cells.value_counts()

    def share(pattern: re.Pattern) -> float:
        return float(cells.str.contains(pattern).mean())

    tree_mask = cells.str.contains(_TREE_SEP, regex=False)
    level1 = {parse_category_tree(v, 1) for v in cells[tree_mask]} if tree_mask.any() else set()
    return ColumnStats(
        name=name,
        filled=n / max(1, len(text)),
        distinct=len(counts),
        distinct_ratio=len(counts) / n,
        mean_length=float(cells.str.len().mean()),
        mean_words=float(cells.str.split().str.len().mean()),
        numeric=share(_NUMBER),
        integer=share(_INTEGER),
        date=share(_DATE),
        boolean=len(counts) <= 2 and all(v.lower() in _BOOLEAN for v in counts.index),
        url=share(_URL),
        image=share(_IMAGE_VALUE),
        json=float((cells.str.match(r"^[\[{]") & ~tree_mask).mean()),
        spaced=float(cells.str.contains(r"\s").mean()),
        tree=float(tree_mask.mean()),
        tree_level1=len(level1 - {None}),
        top_share=float(counts.iloc[0] / n),
        tree_depth=_tree_depth(cells[tree_mask]) if tree_mask.any() else 0,
    )


def _tree_depth(trees: pd.Series) -> int:
    """The deepest level whose nodes are still categories: each groups two products or
    more on average. Flipkart's trees end in the product's own name (one product per node), which
    is a description, not a category to learn."""
    parts = [path_parts(v) for v in trees]
    depth = 0
    for k in range(1, max((len(p) for p in parts), default=0) + 1):
        nodes = {tuple(p[:k]) for p in parts if len(p) >= k}
        if len(nodes) * 2 > sum(1 for p in parts if len(p) >= k):
            break
        depth = k
    return max(1, depth)


@dataclass
class ColumnGuess:
    """Default mapping of a CSV: the page shows it, the user confirms or changes it."""

    text: list[str] = field(default_factory=list)
    label: str | None = None
    label_level: int | None = None  # a flat level of a category tree (never guessed: trees are learned whole)
    label_depth: int | None = None  # how deep to learn a category tree (see _tree_depth)
    image: str | None = None
    id: str | None = None


def _is_image(s: ColumnStats) -> bool:
    return s.image >= 0.5 and s.spaced < 0.5


def _is_id(s: ColumnStats, rows: int) -> bool:
    unique = s.distinct_ratio >= 0.98 and s.filled >= 0.95 and rows >= 2
    short = s.spaced <= 0.02 and s.mean_length <= 64 and s.url < 0.5 and s.image < 0.5
    return unique and short and (bool(s.words & ID_WORDS) or s.integer >= 0.99)


def _label_classes(s: ColumnStats) -> int:
    return s.tree_level1 if s.tree >= 0.5 else s.distinct


def _is_label_candidate(s: ColumnStats, rows_filled: int) -> bool:
    if s.filled < 0.5 or s.numeric >= 0.8 or s.date >= 0.5 or s.boolean or s.url >= 0.5 or s.image >= 0.5:
        return False
    if s.json >= 0.5:
        return False
    k = _label_classes(s)
    if k < 2 or k > MAX_LABEL_CLASSES:
        return False
    if s.tree >= 0.5:
        return True  # a tree's whole values are distinct; its level 1 is the label
    return k <= max(2, 0.5 * rows_filled) and s.mean_length <= 80


def _label_score(s: ColumnStats) -> tuple:
    """Higher is better: a label-like name, a tree, no dominant value, then fewer classes
    (the coarsest category), then column order (by the caller's stable sort)."""
    named = bool(s.words & LABEL_WORDS)
    return (named or s.tree >= 0.5, s.top_share <= 0.9, -_label_classes(s))


def _is_free_text(s: ColumnStats) -> bool:
    if s.filled < 0.3 or s.url >= 0.5 or s.image >= 0.5 or s.json >= 0.5 or s.numeric >= 0.5 or s.date >= 0.5:
        return False
    if s.tree >= 0.5 or s.boolean:
        return False
    if s.words & TEXT_WORDS:
        return s.mean_words >= 1.5 or s.distinct_ratio >= 0.5
    if s.words & LABEL_WORDS:  # "Cluster Label", "category_path": names of groups, not descriptions
        return False
    return s.mean_words >= 3 and s.distinct_ratio >= 0.6


def guess_columns(frame: pd.DataFrame) -> ColumnGuess:
    """The most likely image, id, label and text columns of `frame` (a CSV read with
    every value as text). Bounded: statistics come from at most SAMPLE_ROWS rows."""
    sample = frame.head(SAMPLE_ROWS)
    stats = [column_stats(str(c), sample[c]) for c in sample.columns]
    rows = len(sample)
    taken: set[str] = set()

    images = [s for s in stats if _is_image(s)]
    image = max(images, key=lambda s: (s.image, bool(s.words & IMAGE_WORDS)), default=None) if images else None
    if image is not None:
        taken.add(image.name)

    ids = [s for s in stats if s.name not in taken and _is_id(s, rows)]
    id_col = next((s for s in ids if s.words & ID_WORDS), ids[0] if ids else None)
    if id_col is not None:
        taken.add(id_col.name)

    texts = [s for s in stats if s.name not in taken and _is_free_text(s)]
    labels = [s for s in stats if s.name not in taken and s not in texts
              and _is_label_candidate(s, max(1, round(s.filled * rows)))]
    label = max(labels, key=_label_score) if labels else None  # max keeps the first of equals

    if not texts:  # nothing reads like free text: the longest remaining column, if any is words
        rest = [s for s in stats if s.name not in taken and s is not label and s.numeric < 0.5 and s.url < 0.5
                and s.filled > 0 and s.json < 0.5 and s.tree < 0.5]
        longest = max(rest, key=lambda s: s.mean_length, default=None)
        texts = [longest] if longest is not None and longest.mean_words >= 1.5 else []
    # names and titles first (short), then longer free text, each group in the CSV's order
    texts = sorted(texts, key=lambda s: 0 if s.words & TITLE_WORDS else 1)[:3]
    return ColumnGuess(
        text=[s.name for s in texts],
        label=label.name if label is not None else None,
        label_depth=label.tree_depth if label is not None and label.tree >= 0.5 else None,
        image=image.name if image is not None else None,
        id=id_col.name if id_col is not None else None,
    )
