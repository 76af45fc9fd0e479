"""Word-level SHAP values for the text model, with a bounded evaluation budget.

The text model takes raw strings, so we use shap's model-agnostic explainer with a text
masker over the string itself (`shap.Explainer(f, shap.maskers.Text(r"\\W+"))`, which is
a PartitionExplainer): masked words are replaced by "…", which the model's vectoriser
strips like any punctuation. `f` maps a list of strings to the text model's
**probability** for the explained class (not log-odds): the values then read directly
as "this word adds +0.12 to the probability of Kitchen", and the deletion test in
`bench/bench_explain.py` measures exactly that probability.

Owen values from the PartitionExplainer are additive by construction, whatever the
budget: base value + Σ values == f(text). We check it on every call (`AdditivityError`
beyond 1e-4), against the model's output on the text we were given, so the numbers
shown are provably the model's own.

Two details keep that check honest:
- whitespace is collapsed first (the masker collapses it when it rebuilds a string, and
  the catalogue's `join_text` does the same), so the text explained is the text scored;
- the tokenizer gives trailing punctuation to the last word (shap's SimpleTokenizer
  drops it, which changes the string for characters the vectoriser does not strip).
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

import core.tf_setup  # noqa: F401  (before TensorFlow)
import tensorflow as tf

SPLIT_PATTERN = r"\W+"
MAX_EVALS = 300  # hard cap: keeps a 100-word description under ~2 s on 2 CPU cores
MIN_EVALS = 100  # short texts get at least this many (still tiny), enough for exact-ish Owen values
TOLERANCE = 1e-4


class AdditivityError(AssertionError):
    """base value + Σ SHAP values did not reproduce the model's output: a bug, never shown."""


def normalise_text(text: str) -> str:
    """Collapse whitespace (what the masker does to every string it rebuilds)."""
    return " ".join(str(text).split())


def _word_tokenizer():
    """shap's SimpleTokenizer, but the last token keeps any trailing separator characters
    (so masking nothing rebuilds the exact input string)."""
    from shap.maskers._text import SimpleTokenizer

    class WordTokenizer(SimpleTokenizer):
        def __call__(self, s, return_offsets_mapping=True):
            out = super().__call__(s, return_offsets_mapping=True)
            offsets = list(out["offset_mapping"])
            if not offsets and s:
                offsets, out["input_ids"] = [(0, len(s))], [s]
            elif offsets and offsets[-1][1] < len(s):
                offsets[-1] = (offsets[-1][0], len(s))
                out["input_ids"][-1] = s[offsets[-1][0]:]
            if return_offsets_mapping:
                out["offset_mapping"] = offsets
            else:
                out.pop("offset_mapping", None)
            return out

    return WordTokenizer(SPLIT_PATTERN)


def eval_budget(n_tokens: int, max_evals: int = MAX_EVALS) -> int:
    """2·n+1 evaluations at least (every word gets split off at least once), at least
    MIN_EVALS for short texts, never more than `max_evals`."""
    return int(min(max_evals, max(2 * n_tokens + 1, MIN_EVALS)))


@dataclass
class TokenValue:
    token: str  # the word as written
    value: float  # SHAP value: change in the class probability the word accounts for
    start: int  # character offsets of the word in `TextShapResult.text`
    end: int


@dataclass
class TextShapResult:
    text: str  # the (whitespace-collapsed) text that was explained
    class_index: int
    label: str | None
    tokens: list[TokenValue]  # in text order
    base_value: float  # f(everything masked)
    model_output: float  # f(text): the text model's probability for the class
    additivity_error: float
    evals: int
    seconds: float = 0.0
    segments: list[str] = field(default_factory=list, repr=False)  # token + its separator, in order

    @property
    def values(self) -> np.ndarray:
        return np.array([t.value for t in self.tokens], dtype=np.float64)

    def top(self, k: int = 5) -> list[TokenValue]:
        """The k words that push the class up the most."""
        return sorted(self.tokens, key=lambda t: -t.value)[:k]

    def without(self, indices: Sequence[int]) -> str:
        """The text with the words at these token indices removed (separators kept):
        what the deletion test feeds back to the model."""
        drop = set(int(i) for i in indices)
        parts = []
        for i, (seg, tok) in enumerate(zip(self.segments, self.tokens)):
            parts.append(seg[len(tok.token):] if i in drop else seg)
        return normalise_text("".join(parts))

    def as_dict(self) -> dict:
        return {"label": self.label, "class_index": self.class_index, "output": "probability",
                "base_value": self.base_value, "model_output": self.model_output,
                "additivity_error": self.additivity_error, "evals": self.evals, "text": self.text,
                "tokens": [{"token": t.token, "value": t.value, "start": t.start, "end": t.end}
                           for t in self.tokens]}


class TextShap:
    """SHAP for one text model. Keeps the masker, one explainer per class and a compiled
    model call, so repeated explanations pay only for the model evaluations."""

    def __init__(self, text_model: Any, labels: Sequence[str] | None = None, *,
                 max_evals: int = MAX_EVALS, batch_size: int = 64, seed: int = 0):
        import shap

        self._shap = shap
        keras_model = getattr(text_model, "model", text_model)
        self._call = tf.function(lambda x: keras_model(x, training=False),
                                 input_signature=[tf.TensorSpec((None, 1), tf.string)], reduce_retracing=True,
                                 autograph=False)
        self.labels = list(labels) if labels is not None else None
        self.max_evals, self.batch_size, self.seed = int(max_evals), int(batch_size), seed
        self.masker = shap.maskers.Text(_word_tokenizer())
        self._explainers: dict[int, Any] = {}
        self._lock = threading.Lock()

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, classes) probabilities, in chunks (same numbers as TextModel.predict_proba)."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = []
        for i in range(0, len(texts), 256):
            out.append(self._call(tf.constant(texts[i:i + 256], dtype=tf.string)[:, None]).numpy())
        return np.concatenate(out).astype(np.float64)

    def _explainer(self, class_index: int):
        if class_index not in self._explainers:
            def f(texts: Sequence[str]) -> np.ndarray:
                return self.predict_proba(list(texts))[:, class_index]

            self._explainers[class_index] = self._shap.Explainer(f, self.masker)
        return self._explainers[class_index]

    def tokenize(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """(segments, word spans): segment i is word i plus the separator after it."""
        text = normalise_text(text)
        offsets = self.masker.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        segments = self.masker.token_segments(text)[0]
        spans = []
        for (start, _), seg in zip(offsets, segments):
            word = re.split(SPLIT_PATTERN, seg, maxsplit=1)[0]
            spans.append((start, start + len(word)))
        return list(segments), spans

    def explain(self, text: str, class_index: int, *, max_evals: int | None = None) -> TextShapResult:
        """SHAP values of each word of `text` for `class_index` (probability scale)."""
        started = time.perf_counter()
        text = normalise_text(text)
        if not text:
            raise ValueError("cannot explain an empty text")
        segments, spans = self.tokenize(text)
        budget = eval_budget(len(segments), max_evals or self.max_evals)
        with self._lock:
            # PartitionExplainer breaks ties with np.random: make explanations repeatable.
            state = np.random.get_state()
            np.random.seed(self.seed)
            try:
                sv = self._explainer(int(class_index))([text], max_evals=budget, batch_size=self.batch_size,
                                                       silent=True)
            finally:
                np.random.set_state(state)
        values = np.asarray(sv.values[0], dtype=np.float64).reshape(-1)
        base = float(np.asarray(sv.base_values).reshape(-1)[0])
        if len(values) != len(segments):
            raise AdditivityError(f"SHAP returned {len(values)} values for {len(segments)} tokens")
        output = float(self.predict_proba([text])[0, class_index])
        error = abs(base + float(values.sum()) - output)
        if not error <= TOLERANCE:
            raise AdditivityError(f"SHAP values do not add up: base {base:.6f} + Σ {values.sum():.6f} "
                                  f"!= model output {output:.6f} (error {error:.2e})")
        tokens = [TokenValue(text[s:e], float(v), s, e) for (s, e), v in zip(spans, values)]
        label = self.labels[class_index] if self.labels is not None else None
        return TextShapResult(text, int(class_index), label, tokens, base, output, error, budget,
                              time.perf_counter() - started, segments)


def random_word_indices(result: TextShapResult, k: int, rng: random.Random) -> list[int]:
    """k random token indices that are actual words (the deletion test's baseline)."""
    words = [i for i, t in enumerate(result.tokens) if t.token]
    return rng.sample(words, min(k, len(words)))


def top_word_indices(result: TextShapResult, k: int) -> list[int]:
    """The k words with the largest positive SHAP value."""
    order = [i for i in np.argsort(-result.values, kind="stable") if result.tokens[i].token]
    return [int(i) for i in order[:k] if result.tokens[i].value > 0]
