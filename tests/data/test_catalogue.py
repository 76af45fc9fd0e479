"""core.data.catalogue: CSV import mapped by flags, with a report instead of crashes."""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.common.errors import InputError
from core.data.catalogue import join_text, load_catalogue
from core.data.category_tree import parse_category_tree
from core.data.csv_files import read_csv
from core.data.downloads import DownloadError, download_url
from core.data.splits import dedup_groups

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def save_png(path: Path, colour=(200, 30, 30), size=(16, 12)) -> Path:
    Image.new("RGB", size, colour).save(path, "PNG")
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------- read_csv


def test_read_csv_keeps_text_and_strips_column_names(tmp_path: Path):
    path = write(tmp_path / "p.csv", "id, Title , Category Label\n007,NA,\n8,null,Watches\n")
    frame = read_csv(path)
    assert list(frame.columns) == ["id", "Title", "Category Label"]
    assert frame["id"].tolist() == ["007", "8"]  # leading zero kept: everything is text
    assert frame["Title"].tolist() == ["NA", "null"]  # not NaN
    assert frame["Category Label"].tolist() == ["", "Watches"]
    assert all(isinstance(v, str) for v in frame.to_numpy().ravel())


def test_read_csv_accepts_bom(tmp_path: Path):
    path = write(tmp_path / "bom.csv", b"\xef\xbb\xbftitle,label\nCaf\xc3\xa9 cup,Kitchen\n")
    frame = read_csv(path)
    assert list(frame.columns) == ["title", "label"]  # no '\ufefftitle'
    assert frame["title"][0] == "Café cup"


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_read_csv_empty_file(tmp_path: Path, content: bytes):
    path = write(tmp_path / "empty.csv", content)
    with pytest.raises(InputError) as exc:
        read_csv(path)
    msg = one_line(exc)
    assert "empty.csv" in msg and "no rows" in msg


def test_read_csv_header_only(tmp_path: Path):
    path = write(tmp_path / "head.csv", "title,label\n")
    with pytest.raises(InputError) as exc:
        read_csv(path)
    assert "head.csv" in one_line(exc) and "no rows" in str(exc.value)


def test_read_csv_latin1_under_utf8_names_line_and_offset(tmp_path: Path):
    data = "title,label\nmug,Kitchen\n".encode() + "café,Kitchen\n".encode("latin-1")
    path = write(tmp_path / "latin.csv", data)
    with pytest.raises(InputError) as exc:
        read_csv(path)
    msg = one_line(exc)
    offset = data.index(b"\xe9")
    assert "latin.csv" in msg and "line 3" in msg and f"byte offset {offset}" in msg
    assert "--encoding latin-1" in msg
    assert read_csv(path, encoding="latin-1")["title"].tolist() == ["mug", "café"]


UNICODE_CSV = "title,label\nmug,Kitchen\ncafé 日本,Kitchen\n"


@pytest.mark.parametrize("bom, codec", [
    (b"", "utf-16"),  # Python writes the mark, little-endian (as Excel's "Unicode text" does)
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (b"", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_read_csv_reads_utf16_and_utf32_by_their_byte_order_mark(tmp_path: Path, bom, codec, encoding):
    path = write(tmp_path / "wide.csv", bom + UNICODE_CSV.encode(codec))
    frame = read_csv(path, encoding=encoding)  # the mark wins over the (default or wrong) --encoding
    assert list(frame.columns) == ["title", "label"]
    assert frame["title"].tolist() == ["mug", "café 日本"] and frame["label"].tolist() == ["Kitchen"] * 2


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_read_csv_utf16_without_mark_names_the_encoding_to_use(tmp_path: Path, codec):
    path = write(tmp_path / "nomark.csv", UNICODE_CSV.encode(codec))
    with pytest.raises(InputError) as exc:
        read_csv(path)  # NUL is valid UTF-8: decoding alone would not fail
    msg = one_line(exc)
    assert "nomark.csv" in msg and codec.upper() in msg and f"--encoding {codec}" in msg
    assert "latin-1" not in msg
    assert read_csv(path, encoding=codec)["title"].tolist() == ["mug", "café 日本"]


def test_read_csv_broken_utf16_names_the_line_and_no_latin1_hint(tmp_path: Path):
    lone_surrogate = b"\x00\xd8"  # U+D800 with no low half, little-endian
    data = codecs.BOM_UTF16_LE + "title\nok\n".encode("utf-16-le") + lone_surrogate + "x\n".encode("utf-16-le")
    path = write(tmp_path / "broken16.csv", data)
    with pytest.raises(InputError) as exc:
        read_csv(path)
    msg = one_line(exc)
    assert "broken16.csv" in msg and "line 3" in msg and "UTF-16" in msg and "byte-order mark" in msg
    assert "latin-1" not in msg


def test_read_csv_offset_counts_the_bom(tmp_path: Path):
    data = b"\xef\xbb\xbftitle\nok\nbad\xff\n"
    with pytest.raises(InputError) as exc:
        read_csv(write(tmp_path / "b.csv", data))
    offset = data.index(b"\xff")  # counted from the start of the file, BOM included
    assert f"byte offset {offset}" in str(exc.value) and "line 3" in str(exc.value)


def test_read_csv_malformed_names_line(tmp_path: Path):
    path = write(tmp_path / "bad.csv", "a,b\n1,2\n3,4,5\n6,7\n")
    with pytest.raises(InputError) as exc:
        read_csv(path)
    msg = one_line(exc)
    assert "bad.csv" in msg and "line 3" in msg

    path = write(tmp_path / "quote.csv", 'a,b\n1,2\n"3,4\n5,6\n')
    with pytest.raises(InputError) as exc:
        read_csv(path)
    assert "quote.csv" in one_line(exc) and "line 3" in str(exc.value)


def test_read_csv_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="file not found"):
        read_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- trees


@pytest.mark.parametrize(
    "value,level,expected",
    [
        ('["Home Furnishing >> Bed Linen >> Bedsheets >> Some Sheet Do..."]', 1, "Home Furnishing"),
        ('["Home Furnishing >> Bed Linen >> Bedsheets >> Some Sheet Do..."]', 2, "Bed Linen"),
        ('["Home Furnishing >> Bed Linen >> Bedsheets >> Some Sheet Do..."]', 4, "Some Sheet Do..."),
        ('["Home Furnishing >> Bed Linen >> Bedsheets >> Some Sheet Do..."]', 5, None),
        ("['Watches >>  Wrist   Watches ']", 2, "Wrist Watches"),
        ('"Baby Care >> Towels"', 1, "Baby Care"),
        ("  Watches  ", 1, "Watches"),
        ("Watches", 2, None),
        ("Kids'", 1, "Kids'"),
        ("", 1, None),
        ('[""]', 1, None),
    ],
)
def test_parse_category_tree(value: str, level: int, expected: str | None):
    assert parse_category_tree(value, level) == expected


def test_parse_category_tree_rejects_level_zero():
    with pytest.raises(ValueError):
        parse_category_tree("A >> B", 0)


# --------------------------------------------------------------------------- load_catalogue


def test_load_generated_catalogue(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path, n_per_class=5, classes=("Watches", "Toys", "Garden"))
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    assert len(catalogue) == 15 == len(catalogue.frame)
    assert catalogue.classes == ["Garden", "Toys", "Watches"]
    assert catalogue.labels == cat.labels
    assert catalogue.texts == cat.texts
    assert all(p is not None and p.is_file() for p in catalogue.image_paths)
    assert all(catalogue.usable)
    assert catalogue.labelled_mask().all() and catalogue.trainable_mask().all()
    report = catalogue.report
    assert report.rows == 15 and report.labelled == 15
    assert report.per_class == {"Garden": 5, "Toys": 5, "Watches": 5}
    assert report.missing_images == [] and report.empty_texts == 0 and report.duplicate_texts == 0
    json.dumps(report.to_dict())  # JSON-ready
    lines = report.summary_lines()
    assert lines[0] == "products.csv: 15 rows, 15 labelled, 3 classes (5 rows each)"
    assert "0 images missing; 0 empty texts; 0 duplicate texts" in lines


def test_generated_images_have_class_colours(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path, n_per_class=2, image_format="jpeg")
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs)
    for path, label in zip(catalogue.image_paths, catalogue.labels):
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=float)
        coloured = arr[(arr < 230).any(axis=2)]
        assert len(coloured) > arr.shape[0] * arr.shape[1] * 0.3
        assert np.abs(coloured.mean(axis=0) - cat.colours[label]).max() < 30


def test_tree_labels_and_leading_space_columns(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path, n_per_class=3, label_format="tree", header_spaces=True)
    assert cat.load_kwargs["label_level"] == 1
    raw = cat.csv_path.read_text().splitlines()[0]
    assert raw == "title, description, category, image"
    # flags may be given with or without the stray spaces
    kwargs = dict(cat.load_kwargs, text_cols=["title", " description"], label_col=" category ")
    catalogue = load_catalogue(cat.csv_path, **kwargs)
    assert catalogue.labels == cat.labels
    assert list(catalogue.frame.columns) == ["title", "description", "category", "image"]
    level2 = load_catalogue(cat.csv_path, **dict(kwargs, label_level=2))
    assert set(level2.labels) == {"Sub 1", "Sub 2", "Sub 3"}


def test_missing_column_names_file_column_and_columns(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path, n_per_class=2, with_images=False)
    with pytest.raises(InputError) as exc:
        load_catalogue(cat.csv_path, text_cols=["title", "descripton"], label_col="category")
    msg = one_line(exc)
    assert "products.csv" in msg and "'descripton'" in msg
    assert "'title', 'description', 'category', 'image'" in msg
    assert "did you mean 'description'" in msg
    with pytest.raises(InputError, match="no label column 'label'"):
        load_catalogue(cat.csv_path, text_cols=["title"], label_col="label")


def test_label_level_deeper_than_any_tree(tmp_path: Path):
    path = write(
        tmp_path / "t.csv",
        'name,product_category_tree\na,"[""A >> B >> C""]"\nb,"[""D >> E""]"\n',
    )
    with pytest.raises(InputError) as exc:
        load_catalogue(path, text_cols=["name"], label_col="product_category_tree", label_level=5)
    assert one_line(exc) == (
        "t.csv: --label-level 5 but the deepest category tree in column "
        "'product_category_tree' has 3 levels"
    )
    # level 3 is fine: the shallower row is unlabelled and reported, not dropped
    catalogue = load_catalogue(path, text_cols=["name"], label_col="product_category_tree", label_level=3)
    assert catalogue.labels == ["C", None]
    assert catalogue.report.unlabelled_rows == [2]
    assert catalogue.labelled_mask().tolist() == [True, False]
    assert any("1 row without a label (rows 2)" in line for line in catalogue.report.summary_lines())


def test_text_join_and_empty_texts(tmp_path: Path):
    path = write(
        tmp_path / "j.csv",
        "title,desc,label\n"
        "Red  mug ,  Big\tone ,A\n"
        ",only desc,B\n"
        "Done.,next,A\n"
        ",,B\n",
    )
    catalogue = load_catalogue(path, text_cols=["title", "desc"], label_col="label")
    assert catalogue.texts == ["Red mug. Big one", "only desc", "Done. next", ""]
    assert catalogue.report.empty_texts == 1 and catalogue.report.empty_text_rows == [4]
    # no image column: the empty-text row has nothing left
    assert catalogue.usable == [True, True, True, False]
    assert catalogue.report.unusable_rows == [4]
    assert join_text(["a", "", "  b  c "]) == "a. b c"


def test_missing_and_broken_images_are_reported_not_fatal(tmp_path: Path):
    images = tmp_path / "pics"
    images.mkdir()
    save_png(images / "ok.png")
    (images / "junk.png").write_bytes(os.urandom(2000))
    jpeg = tmp_path / "tmp.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(jpeg, "JPEG")
    (images / "cut.jpg").write_bytes(jpeg.read_bytes()[:600])
    path = write(
        tmp_path / "c.csv",
        "title,label,image\n"
        "ok,A,ok.png\n"
        "gone,B,gone.png\n"
        "junk,A,junk.png\n"
        "cut,B,cut.jpg\n"
        ",A,gone.png\n"
        "no image given,B,\n",
    )
    catalogue = load_catalogue(path, text_cols=["title"], label_col="label", image_col="image", image_dir=images)
    assert catalogue.image_paths[0] == images / "ok.png"
    assert catalogue.image_paths[1:] == [None] * 5
    assert catalogue.texts[1] == "gone"  # the row keeps its text
    report = catalogue.report
    assert [(m["row"], m["column"], m["value"]) for m in report.missing_images] == [
        (2, "image", "gone.png"),
        (3, "image", "junk.png"),
        (4, "image", "cut.jpg"),
        (5, "image", "gone.png"),
    ]
    reasons = [m["reason"] for m in report.missing_images]
    assert reasons[0].startswith("file not found") and "gone.png" in reasons[0]
    assert reasons[1] == "not an image"
    assert reasons[2].startswith("truncated or corrupt")
    assert report.no_image_rows == [6]  # empty cell: no image, not "missing"
    # row 5 has neither text nor a usable image: kept, flagged, reported
    assert len(catalogue) == 6
    assert catalogue.usable == [True, True, True, True, False, True]
    assert report.unusable_rows == [5]
    assert catalogue.trainable_mask().tolist() == [True, True, True, True, False, True]
    lines = report.summary_lines()
    assert "4 images missing (rows 2, 3, 4, 5)" in lines[1]
    assert any("neither text nor image" in line and "rows 5" in line for line in lines)


def test_check_images_false_still_reports_missing_files(tmp_path: Path):
    (tmp_path / "junk.png").write_bytes(b"not a picture")
    path = write(tmp_path / "c.csv", "title,image\na,junk.png\nb,gone.png\n")
    catalogue = load_catalogue(path, text_cols=["title"], image_col="image", check_images=False)
    assert catalogue.image_paths[0] == tmp_path / "junk.png"  # relative to the CSV's folder
    assert catalogue.image_paths[1] is None
    assert [m["row"] for m in catalogue.report.missing_images] == [2]


def test_wrong_image_folder(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path, n_per_class=2)
    with pytest.raises(InputError, match="image folder not found"):
        load_catalogue(cat.csv_path, **dict(cat.load_kwargs, image_dir=tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    catalogue = load_catalogue(cat.csv_path, **dict(cat.load_kwargs, image_dir=empty))
    assert len(catalogue.report.missing_images) == 6
    assert any("is the image folder right?" in line for line in catalogue.report.summary_lines())


def test_generated_missing_images(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path, n_per_class=4, missing_images=2)
    catalogue = load_catalogue(cat.csv_path, **cat.load_kwargs, progress=True)
    assert [m["row"] for m in catalogue.report.missing_images] == cat.missing_rows
    for row in cat.missing_rows:
        assert catalogue.image_paths[row - 1] is None and catalogue.usable[row - 1]


def test_absolute_image_paths_and_confinement(tmp_path: Path, make_catalogue):
    cat = make_catalogue(tmp_path / "cat", n_per_class=2, absolute_image_paths=True)
    assert Path(cat.rows[0]["image"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # absolute paths are used as is, whatever image_dir says
    catalogue = load_catalogue(cat.csv_path, **dict(cat.load_kwargs, image_dir=elsewhere))
    assert all(p is not None and p.is_absolute() for p in catalogue.image_paths)
    assert catalogue.report.missing_images == []
    # an untrusted upload may not point anywhere on the server
    confined = load_catalogue(cat.csv_path, **cat.load_kwargs, confine_images=True)
    assert all(p is None for p in confined.image_paths)
    assert "absolute" in confined.report.missing_images[0]["reason"]

    save_png(tmp_path / "secret.png")
    path = write(tmp_path / "cat" / "up.csv", "title,image\na,../secret.png\n")
    assert load_catalogue(path, text_cols=["title"], image_col="image").image_paths[0] is not None
    confined = load_catalogue(path, text_cols=["title"], image_col="image", confine_images=True)
    assert confined.image_paths[0] is None
    assert "outside" in confined.report.missing_images[0]["reason"]


def test_single_class_needs_two_for_training(tmp_path: Path):
    path = write(tmp_path / "one.csv", "title,label\na,Watches\nb,Watches\nc,\n")
    with pytest.raises(InputError) as exc:
        load_catalogue(path, text_cols=["title"], label_col="label", require_labels=True)
    assert one_line(exc) == (
        "one.csv: only one class 'Watches' in column 'label': training needs at least two"
    )
    catalogue = load_catalogue(path, text_cols=["title"], label_col="label")  # fine for predict
    assert catalogue.classes == ["Watches"] and catalogue.report.unlabelled_rows == [3]
    with pytest.raises(InputError, match="training needs a label column"):
        load_catalogue(path, text_cols=["title"], require_labels=True)


def test_a_tree_column_is_read_as_whole_paths_by_default(tmp_path: Path):
    """Brackets, quotes and ragged spacing are stripped; ragged depths are kept; the note
    says a tree is learned and how to ask for one level instead."""
    path = write(tmp_path / "t.csv", 'title,tree\na,"[""A >> B >> C""]"\nb,"[\'C  >>D\']"\nc,"A >>  B"\nd,""\n')
    catalogue = load_catalogue(path, text_cols=["title"], label_col="tree")
    assert catalogue.labels == ["A >> B >> C", "C >> D", "A >> B", None]
    assert any("category paths: learning the tree to level 3" in line for line in catalogue.report.summary_lines())
    cut = load_catalogue(path, text_cols=["title"], label_col="tree", label_depth=2)
    assert cut.labels == ["A >> B", "C >> D", "A >> B", None] and cut.label_depth == 2
    flat = load_catalogue(path, text_cols=["title"], label_col="tree", label_level=2)
    assert flat.labels == ["B", "D", "B", None]  # --label-level N: unchanged, one level, flat
    with pytest.raises(InputError, match="not both"):
        load_catalogue(path, text_cols=["title"], label_col="tree", label_level=1, label_depth=2)
    with pytest.raises(InputError, match="--label-depth must be 1 or more"):
        load_catalogue(path, text_cols=["title"], label_col="tree", label_depth=0)


def test_several_label_columns_make_one_path_per_row(tmp_path: Path):
    """--label-col a,b,c: one column per level, top first; an empty level ends the path."""
    path = write(tmp_path / "m.csv", "title,master,sub,article\n"
                 "a,Apparel,Topwear,Shirts\nb,Apparel,Topwear,\nc,Footwear,,Sandals\nd,,,\n")
    catalogue = load_catalogue(path, text_cols=["title"], label_col="master, sub,article")
    assert catalogue.labels == ["Apparel >> Topwear >> Shirts", "Apparel >> Topwear", "Footwear", None]
    assert catalogue.label_col == "master,sub,article"
    assert load_catalogue(path, text_cols=["title"], label_col="master,sub,article", label_level=2).labels == [
        "Topwear", "Topwear", None, None]
    with pytest.raises(InputError, match="no label column 'artcle'.*did you mean 'article'"):
        load_catalogue(path, text_cols=["title"], label_col="master,sub,artcle")
    with pytest.raises(InputError, match="--label-level 4 but only 3 label columns"):
        load_catalogue(path, text_cols=["title"], label_col="master,sub,article", label_level=4)


def test_duplicates_and_dedup_groups(tmp_path: Path):
    path = write(
        tmp_path / "d.csv",
        "title,label\nRed Shirt,A\nred   shirt,A\nBlue shirt,B\n RED SHIRT ,B\n,A\n,B\nblue SHIRT,A\n",
    )
    catalogue = load_catalogue(path, text_cols=["title"], label_col="label")
    assert catalogue.report.duplicate_texts == 3  # rows 2, 4 and 7; empty texts don't count
    groups = dedup_groups(catalogue.texts)
    assert groups.dtype.kind == "i" and len(groups) == 7
    assert groups[0] == groups[1] == groups[3]
    assert groups[2] == groups[6] != groups[0]
    assert groups[4] != groups[5]  # empty texts are not duplicates of each other
    assert len(set(groups.tolist())) == 4


# --------------------------------------------------------------------------- URLs


def test_url_images_are_downloaded_and_cached(tmp_path: Path, studio_home: Path, http_server):
    save_png(http_server.root / "a.png", (10, 200, 10))
    (http_server.root / "text.png").write_text("<html>not an image</html>")
    path = write(
        tmp_path / "u.csv",
        "title,image\n"
        f"a,{http_server.url('a.png')}\n"
        f"same url again,{http_server.url('a.png')}\n"
        f"gone,{http_server.url('gone.png')}\n"
        f"html,{http_server.url('text.png')}\n",
    )
    catalogue = load_catalogue(path, text_cols=["title"], image_col="image")
    cached = catalogue.image_paths[0]
    assert cached is not None and cached == catalogue.image_paths[1]
    assert cached.parent == studio_home / "data" / "cache" / "downloads"
    assert cached.read_bytes() == (http_server.root / "a.png").read_bytes()
    missing = {m["row"]: m["reason"] for m in catalogue.report.missing_images}
    assert missing == {3: "download failed: HTTP 404", 4: "not an image"}
    assert catalogue.texts[2] == "gone" and catalogue.usable[2]
    assert sorted(http_server.requests) == ["/a.png", "/gone.png", "/text.png"]  # one each
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".part")]

    http_server.requests.clear()
    again = load_catalogue(path, text_cols=["title"], image_col="image")
    assert again.image_paths[0] == cached
    # cached: only the failures are retried (a page that is not an image never enters the cache)
    assert sorted(http_server.requests) == ["/gone.png", "/text.png"]


def test_download_limits_and_bad_urls(studio_home: Path, http_server):
    (http_server.root / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(DownloadError, match="download too large"):
        download_url(http_server.url("big.bin"), max_bytes=1000)
    assert not (studio_home / "data" / "cache" / "downloads").exists() or not any(
        (studio_home / "data" / "cache" / "downloads").iterdir()
    )
    with pytest.raises(DownloadError, match="download failed"):
        download_url("http://127.0.0.1:1/nothing.png", timeout=2)
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        download_url("ftp://example.com/a.png")


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED_DATA / "flipkart" / "products.csv").exists(), reason="no shared Flipkart data")
def test_real_flipkart_catalogue():
    folder = SHARED_DATA / "flipkart"
    catalogue = load_catalogue(
        folder / "products.csv",
        text_cols=["product_name", "description"],
        label_col="product_category_tree",
        label_level=1,
        image_col="image",
        image_dir=folder / "images",
        require_labels=True,
        check_images=True,  # decodes all 837 photos (~0.5 s)
    )
    report = catalogue.report
    assert report.rows == 840 and len(catalogue.classes) == 7
    assert set(report.per_class.values()) == {120}
    assert "Home Decor & Festive Needs" in catalogue.classes
    assert len(report.missing_images) == 3
    missing_names = {m["value"] for m in report.missing_images}
    assert missing_names == {
        "994f1d8ade16b9fddce3c127eb7f38ed.jpg",
        "22ac36ba254a68d7dd6173f099771147.jpg",
        "c4ac93e194281d6d1450ffdaa52f5f99.jpg",
    }
    for m in report.missing_images:  # row numbers point at the right CSV rows
        assert catalogue.frame["image"][m["row"] - 1] == m["value"]
    assert all(catalogue.usable) and report.empty_texts == 0


def test_a_long_text_in_the_image_column_is_a_row_problem_not_a_crash(tmp_path):
    """Path.is_file() raises OSError (name too long) for a long description used as an image name."""
    from core.data.catalogue import load_catalogue

    csv_path = tmp_path / "p.csv"
    long_text = "word " * 200
    csv_path.write_text(f"title,category,image\nmug,Kitchen,{long_text}\nwatch,Watches,missing.png\n")
    catalogue = load_catalogue(csv_path, text_cols=["title"], label_col="category", image_col="image")
    assert catalogue.image_paths == [None, None] and catalogue.usable == [True, True]
    reasons = [m["reason"] for m in catalogue.report.missing_images]
    assert reasons[0].startswith("not a usable file name") and reasons[1].startswith("file not found")


def test_every_catalogue_text_is_capped_once_with_a_note(tmp_path):
    from core.common.text import MAX_TEXT_CHARS
    from core.data.catalogue import load_catalogue

    csv_path = tmp_path / "p.csv"
    csv_path.write_text("title,category\n" + "long " * (MAX_TEXT_CHARS // 4) + ",Kitchen\nmug,Kitchen\n")
    catalogue = load_catalogue(csv_path, text_cols=["title"], label_col="category")
    assert len(catalogue.texts[0]) <= MAX_TEXT_CHARS and catalogue.texts[1] == "mug"
    assert any("were cut" in note and "rows 1" in note for note in catalogue.report.notes)
