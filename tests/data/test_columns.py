"""core.data.columns.guess_columns: the one column guesser of Batch and Models → Import, on
frames shaped like the real catalogues (Flipkart, Myntra, PriceRunner), generated here,
and on the shared samples when they are present."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from core.data.csv_files import read_csv
from core.data.columns import ColumnGuess, guess_columns, name_words

DATA = Path("/work/shared/data")
CATEGORIES = ["Home Furnishing", "Baby Care", "Watches", "Kitchen & Dining", "Computers", "Beauty and Personal Care",
              "Home Decor & Festive Needs"]
WORDS = ["cotton", "printed", "double", "bedsheet", "analog", "watch", "steel", "mug", "laptop", "cream", "towel",
         "set", "pack", "blue", "red", "premium", "soft", "kids", "wall", "sticker"]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize()


def flipkart_like(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """Flipkart's 15 columns: hex ids, URLs, a category tree, prices, a long description,
    a JSON-ish specification and ratings that are mostly 'No rating available'."""
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        uid = f"{rng.getrandbits(128):032x}"
        name = f"{sentence(rng, 4)} {i}"
        category = CATEGORIES[i % len(CATEGORIES)]
        out.append({
            "uniq_id": uid, "crawl_timestamp": f"2016-0{1 + i % 6}-2{i % 9} 08:49:52 +0000",
            "product_url": f"http://www.flipkart.com/{name.lower().replace(' ', '-')}/p/itm{i}",
            "product_name": name,
            "product_category_tree": f'["{category} >> Sub {i % 4} >> {name[:30]}..."]',
            "pid": f"BDS{rng.getrandbits(48):012X}", "retail_price": f"{rng.randint(100, 5000)}.0",
            "discounted_price": f"{rng.randint(50, 4000)}.0", "image": f"{uid}.jpg",
            "is_FK_Advantage_product": rng.choice(["False", "True"]),
            "description": f"Key Features of {name} " + sentence(rng, 60) + f" {i}",
            "product_rating": "No rating available" if i % 10 else "4.2",
            "overall_rating": "No rating available" if i % 10 else "4.2",
            "brand": rng.choice(["Acme", "Zenith", "Orion", "", "Nova"]) + (str(i % 7) if i % 3 else ""),
            "product_specifications": '{"product_specification"=>[{"key"=>"Brand", "value"=>"%s"}]}' % i,
        })
    return pd.DataFrame(out)


def myntra_like(rows: int = 80, seed: int = 1) -> pd.DataFrame:
    """Myntra's styles.csv: numeric id, three category levels, colour, season, year, usage, a title."""
    rng = random.Random(seed)
    masters = {"Apparel": ["Topwear", "Bottomwear"], "Accessories": ["Watches", "Bags"], "Footwear": ["Shoes"],
               "Personal Care": ["Fragrance"]}
    out = []
    for i in range(rows):
        master = rng.choice(list(masters))
        sub = rng.choice(masters[master])
        article = f"{sub} type {rng.randint(1, 6)}"
        colour = rng.choice(["Navy Blue", "Black", "White", "Red", "Grey"])
        gender = rng.choice(["Men", "Women", "Boys", "Girls", "Unisex"])
        out.append({"id": str(10000 + i * 7), "gender": gender, "masterCategory": master, "subCategory": sub,
                    "articleType": article, "baseColour": colour, "season": rng.choice(["Fall", "Summer"]),
                    "year": str(rng.randint(2010, 2018)), "usage": rng.choice(["Casual", "Sports", "Ethnic"]),
                    "productDisplayName": f"{rng.choice(['Turtle', 'Puma', 'Titan'])} {gender} {colour} {sub} {i}"})
    return pd.DataFrame(out)


def pricerunner_like(rows: int = 120, seed: int = 2) -> pd.DataFrame:
    """PriceRunner's aggregate: ids, lower-case offer titles, merchant/cluster ids, a
    cluster label (a canonical product name shared by a few offers) and the category."""
    rng = random.Random(seed)
    categories = ["Mobile Phones", "TVs", "CPUs", "Fridges", "Dishwashers", "Microwaves"]
    out = []
    for i in range(rows):
        cluster = i // 2
        category = categories[cluster % len(categories)]
        model = f"{['Apple', 'Samsung', 'Bosch', 'Intel'][cluster % 4]} Model {cluster} {category.split()[0]}"
        out.append({"Product ID": str(i + 1), "Product Title": f"{model.lower()} {sentence(rng, 3).lower()} {i}",
                    "Merchant ID": str(rng.randint(1, 30)), "Cluster ID": str(cluster), "Cluster Label": model,
                    "Category ID": str(2612 + categories.index(category)), "Category Label": category})
    return pd.DataFrame(out)


def test_flipkart_like_frame():
    guess = guess_columns(flipkart_like())
    assert guess == ColumnGuess(text=["product_name", "description"], label="product_category_tree",
                                label_depth=guess.label_depth, image="image", id="uniq_id")
    # the tree is learned down to its last level of categories, not to the product names at its end
    assert guess.label_depth == 2  # "Category >> Sub i": level 3 is each product's own name


def test_myntra_like_frame_takes_the_coarsest_category():
    guess = guess_columns(myntra_like())
    assert guess.label == "masterCategory" and guess.label_level is None
    assert guess.text == ["productDisplayName"]
    assert guess.id == "id" and guess.image is None


def test_pricerunner_like_frame_with_spaced_header():
    frame = pricerunner_like()
    frame.columns = [frame.columns[0]] + [f" {c}" for c in frame.columns[1:]]  # as the real file
    frame.columns = [c.strip() for c in frame.columns]  # read_csv strips them
    guess = guess_columns(frame)
    assert guess.label == "Category Label"  # not the numeric Category ID, not the 60-value Cluster Label
    assert guess.text == ["Product Title"]
    assert guess.id == "Product ID" and guess.image is None


def test_a_numeric_id_or_a_flag_is_never_the_label():
    rng = random.Random(3)
    frame = pd.DataFrame({"code": [str(i % 4) for i in range(40)],  # 4 numeric values: a code, not a label
                          "in_stock": [rng.choice(["yes", "no"]) for _ in range(40)],
                          "title": [f"{sentence(rng, 4)} {i}" for i in range(40)],
                          "kind": [rng.choice(["Shoes", "Bags", "Watches"]) for _ in range(40)]})
    guess = guess_columns(frame)
    assert guess.label == "kind" and guess.text == ["title"] and guess.id is None


def test_images_by_value_and_urls():
    frame = pd.DataFrame({"sku": [f"SKU-{i}" for i in range(10)], "name": [f"Red watch model {i}" for i in range(10)],
                          "picture_link": [f"https://cdn.example.com/p/{i}.JPG?w=300" for i in range(10)],
                          "category": ["Watches", "Bags"] * 5})
    guess = guess_columns(frame)
    assert (guess.image, guess.id, guess.label, guess.text) == ("picture_link", "sku", "category", ["name"])


def test_no_guess_on_a_frame_without_candidates():
    guess = guess_columns(pd.DataFrame({"price": ["1.0", "2.5", "3"], "empty": ["", "", ""]}))
    assert guess == ColumnGuess()


def test_long_text_in_every_column_is_fast_and_safe():
    """The batch crash: long descriptions. Guessing only reads values, never the disk."""
    frame = pd.DataFrame({"description": ["x" * 5000 + f" word {i} more words" for i in range(200)],
                          "image": [f"{i}.png" for i in range(200)]})
    guess = guess_columns(frame)
    assert guess.image == "image" and guess.text == ["description"]


def test_name_words():
    assert {"product", "category", "tree"} <= name_words("product_category_tree")
    assert {"product", "display", "name", "productdisplayname"} <= name_words("productDisplayName")
    assert {"category", "label"} <= name_words(" Category Label")


@pytest.mark.parametrize("name, path", [("flipkart", "flipkart/products.csv"), ("myntra", "myntra/styles.csv"),
                                        ("pricerunner", "pricerunner/pricerunner_aggregate.csv")])
def test_the_shared_samples(name, path):
    if not (DATA / path).exists():
        pytest.skip(f"shared sample {path} absent")
    guess = guess_columns(read_csv(DATA / path))
    expected = {
        # Flipkart's trees are learned to level 3: level 4 on is each product's own name
        "flipkart": ColumnGuess(["product_name", "description"], "product_category_tree", label_depth=3,
                                image="image", id="uniq_id"),
        "myntra": ColumnGuess(["productDisplayName"], "masterCategory", id="id"),
        "pricerunner": ColumnGuess(["Product Title"], "Category Label", id="Product ID"),
    }[name]
    assert guess == expected
