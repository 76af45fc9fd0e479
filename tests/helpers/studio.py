"""Helpers shared by the tests of the studio's database modules (store, auth, review
queue, scoring, registry): users with a cheap hash, and hand-made predictions with
known confidence / margin / disagreement. Imported as `from studio_helpers import ...`
(the tests folder is on sys.path, like `conftest`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

LABELS = ["Kitchen", "Toys", "Watches"]


def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at n=2**4 (for this test) where many users are created but hashing is not
    under test; the cost is stored in each hash, so verification still goes through scrypt."""
    import core.studio.auth

    monkeypatch.setattr(core.studio.auth, "SCRYPT_N", 2**4)


def make_users(store, *names_and_roles: tuple[str, str], password: str = "plum-kiwi-9017") -> dict:
    """Users by name: an 'admin' (the bootstrap user, created first if missing), then the
    given (name, role) pairs created by that admin."""
    from core.studio.auth import User, create_user

    users: dict[str, User] = {}
    row = store.one("SELECT id, username, role FROM users WHERE role = 'admin' ORDER BY id LIMIT 1")
    admin = User(row["id"], row["username"], "admin") if row else create_user(store, "admin", password, "admin")
    users["admin"] = admin
    for name, role in names_and_roles:
        users[name] = create_user(store, name, password, role, by=admin)
    return users


def make_prediction(fused: Sequence[float], *, text: Sequence[float] | None = None,
                    image: Sequence[float] | None = None, labels: Sequence[str] = LABELS,
                    version: str = "v-test"):
    from core.models.classifier import Prediction
    from core.models.tree import CategoryTree

    as_array = lambda p: None if p is None else np.asarray(p, dtype=float)  # noqa: E731
    tree = CategoryTree.from_paths(list(labels), min_rows=1) if any(">>" in label for label in labels) else None
    assert tree is None or tree.labels == list(labels), "tree labels must be given sorted"
    return Prediction(list(labels), as_array(fused), as_array(text), as_array(image), version, tree)


def add_predicted_product(store, fused: Sequence[float], *, text_probs=None, image_probs=None,
                          text: str = "a product", created_by: str | None = None,
                          labels: Sequence[str] = LABELS, version: str = "v-test") -> tuple[int, int]:
    """Insert a product and its prediction (as scoring would); returns (product_id, prediction_id)."""
    from core.studio.scoring import insert_product, prediction_row

    prediction = make_prediction(fused, text=text_probs, image=image_probs, labels=labels, version=version)
    with store.transaction() as db:
        product_id = insert_product(db, text, None, "test", created_by)
        prediction_id = db["predictions"].insert(prediction_row(product_id, prediction, 1.0, created_by)).last_pk
    return product_id, prediction_id


def add_prediction(store, product_id: int, fused: Sequence[float], **kwargs) -> int:
    """Another (newer) prediction for an existing product."""
    from core.studio.scoring import prediction_row

    prediction = make_prediction(fused, **kwargs)
    with store.transaction() as db:
        return db["predictions"].insert(prediction_row(product_id, prediction, 1.0, None)).last_pk


def count(store, table: str) -> int:
    return store.one(f"SELECT COUNT(*) AS n FROM {table}")["n"]
