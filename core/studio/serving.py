"""Loaded models for the HTTP API: each version loaded once per process and shared by
every request (Classifier serialises its own inference), the live one looked up per
request so a promotion applies at the next call."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from core.common.errors import InputError, NotFound, one_line
from core.models.classifier import Classifier
from core.studio.registry import ModelRef, model_ref
from core.studio.store import Store

MAX_LOADED = 4  # versions kept in memory (the live one, a candidate, a rollback target, …)


class NoModel(InputError):
    """No live model, or its files cannot be loaded: nothing to predict with (the HTTP API
    answers 503: the server, not the request, is not ready)."""


class ModelCache:
    """Classifiers by (path, version), least recently used dropped past `max_loaded`."""

    def __init__(self, max_loaded: int = MAX_LOADED):
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[str, str], Classifier] = OrderedDict()
        self._lock = threading.Lock()

    def classifier(self, store: Store, version: str | None = None) -> tuple[Classifier, ModelRef]:
        """The live model (version None) or the named version, loaded on first use."""
        row = model_ref(store, version)
        if row is None and version is not None:
            raise NotFound(f"no model version '{version}'")
        if row is None:
            raise NoModel("no model is live yet: train one, or add one with `python -m core models add`")
        if row.missing:
            raise NoModel(f"the files of model {row.version} are gone from {row.path}")
        key = (str(Path(row.path)), row.version)
        with self._lock:  # one load at a time: two requests never load the same model twice
            if key not in self._loaded:
                try:
                    self._loaded[key] = Classifier.load(row.path)
                except (InputError, OSError, ValueError) as exc:
                    raise NoModel(f"model {row.version} cannot be loaded: {one_line(exc)}") from None
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(key)
            return self._loaded[key], row

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return [version for _, version in self._loaded]
