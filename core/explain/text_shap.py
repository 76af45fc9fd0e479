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

Bounded work, whatever the text (a 20k-word paste must not cost minutes):
- only the first `max_words` words (MAX_SHAP_WORDS) get a value each; the rest of the
  text is one more part with one value ("the rest of the text"), so the values still
  add up to the model's output on the *whole* text, and the result says so (`note`);
- each model call takes the inference lock for its own batch only (`inference_lock`),
  so another user's prediction waits for one batch, never for a whole explanation;
- a time budget: when it runs out, the explanation is redone coarsely (COARSE_PARTS
  consecutive stretches of the text, a handful of evaluations) and says so.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ContextManager, Sequence

import numpy as np

import core.models.tf_setup  # noqa: F401  (before TensorFlow)

# isort: split
import tensorflow as tf

from core.common.text import collapse_whitespace

SPLIT_PATTERN = r"\W+"
MAX_EVALS = 300  # hard cap: keeps a 100-word description under ~2 s on 2 CPU cores
MIN_EVALS = 100  # short texts get at least this many (still tiny), enough for exact-ish Owen values
TOLERANCE = 1e-4
MAX_SHAP_WORDS = 300  # words explained one by one; the rest of a longer text is one part
TIME_BUDGET_S = 10.0  # per explanation; past it, a coarse explanation (COARSE_PARTS parts) is given
COARSE_PARTS = 8
OWN_BUDGET = -1.0  # `time_budget` default of explain(): the explainer's own budget (None means no budget)


class AdditivityError(AssertionError):
    """base value + Σ SHAP values did not reproduce the model's output: a bug, never shown."""


class _OutOfTime(Exception):
    """The explanation's time budget ran out (raised from inside shap's model calls)."""


def _word_tokenizer(max_words: int | None = None, parts: int | None = None):
    """shap's SimpleTokenizer, but the last token keeps any trailing separator characters
    (so masking nothing rebuilds the exact input string). `max_words`: the words after the
    first `max_words` are one last token (the rest of the text). `parts`: the words are
    grouped into at most `parts` consecutive stretches (the coarse explanation)."""
    from shap.maskers._text import SimpleTokenizer

    class WordTokenizer(SimpleTokenizer):
        def __call__(self, s, return_offsets_mapping=True):
            out = super().__call__(s, return_offsets_mapping=True)
            offsets = list(out["offset_mapping"])
            if not offsets and s:
                offsets = [(0, len(s))]
            if parts is not None and len(offsets) > parts:
                edges = np.linspace(0, len(offsets), parts + 1).round().astype(int)
                offsets = [(offsets[a][0], offsets[b - 1][1]) for a, b in zip(edges[:-1], edges[1:])]
            elif max_words is not None and len(offsets) > max_words + 1:
                offsets = offsets[:max_words] + [(offsets[max_words][0], len(s))]
            if offsets and offsets[-1][1] < len(s):
                offsets[-1] = (offsets[-1][0], len(s))
            out["input_ids"] = [s[a:b] for a, b in offsets]
            if return_offsets_mapping:
                out["offset_mapping"] = offsets
            else:
                out.pop("offset_mapping", None)
            return out

    return WordTokenizer(SPLIT_PATTERN)


def count_words(text: str) -> int:
    """How many words (tokens) SHAP would see in `text` with no cap."""
    return len(_word_tokenizer()(collapse_whitespace(text))["offset_mapping"])


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
    words: int = 0  # words in the text
    words_explained: int = 0  # words with a value of their own (the rest: one part, or coarse parts)
    coarse: bool = False  # the time budget ran out: values are for COARSE_PARTS stretches of the text
    note: str = ""  # what was bounded, in words for the user ("" when every word has its value)

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
        return collapse_whitespace("".join(parts))

    def as_dict(self) -> dict:
        return {"label": self.label, "class_index": self.class_index, "output": "probability",
                "base_value": self.base_value, "model_output": self.model_output,
                "additivity_error": self.additivity_error, "evals": self.evals, "text": self.text,
                "words": self.words, "words_explained": self.words_explained, "coarse": self.coarse,
                "note": self.note, "tokens": [{"token": t.token, "value": t.value, "start": t.start, "end": t.end}
                           for t in self.tokens]}


class TextShap:
    """SHAP for one text model. Keeps the maskers, one explainer per class and a compiled
    model call, so repeated explanations pay only for the model evaluations.

    `inference_lock`: the lock that serialises the model's inference (the Classifier's);
    each model call holds it for its own batch only. `max_words`: words explained one by
    one (the rest of the text is one part). `time_budget`: seconds per explanation before
    it falls back to a coarse one (None: no budget)."""

    def __init__(self, text_model: Any, labels: Sequence[str] | None = None, *,
                 max_evals: int = MAX_EVALS, batch_size: int = 64, seed: int = 0,
                 max_words: int = MAX_SHAP_WORDS, time_budget: float | None = TIME_BUDGET_S,
                 inference_lock: ContextManager | None = None):
        import shap

        self._shap = shap
        keras_model = getattr(text_model, "model", text_model)
        self._call = tf.function(lambda x: keras_model(x, training=False),
                                 input_signature=[tf.TensorSpec((None, 1), tf.string)], reduce_retracing=True,
                                 autograph=False)
        self.labels = list(labels) if labels is not None else None
        self.max_evals, self.batch_size, self.seed = int(max_evals), int(batch_size), seed
        self.max_words, self.time_budget = int(max_words), time_budget
        self.masker = shap.maskers.Text(_word_tokenizer(max_words=self.max_words))
        self.coarse_masker = shap.maskers.Text(_word_tokenizer(parts=COARSE_PARTS))
        self._explainers: dict[tuple[int, bool], Any] = {}
        self._inference_lock = inference_lock if inference_lock is not None else threading.RLock()
        self._lock = threading.Lock()  # one explanation at a time: shap's maskers cache the current text
        self._deadline: float | None = None  # monotonic; set (under _lock) while an explanation runs

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, classes) probabilities, in chunks (same numbers as TextModel.predict_proba);
        the inference lock is held per chunk, never across chunks."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = []
        for i in range(0, len(texts), 256):
            batch = tf.constant(texts[i:i + 256], dtype=tf.string)[:, None]
            with self._inference_lock:
                out.append(self._call(batch).numpy())
        return np.concatenate(out).astype(np.float64)

    def _explainer(self, class_index: int, coarse: bool = False):
        key = (class_index, coarse)
        if key not in self._explainers:
            def f(texts: Sequence[str]) -> np.ndarray:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    raise _OutOfTime()
                return self.predict_proba(list(texts))[:, class_index]

            self._explainers[key] = self._shap.Explainer(f, self.coarse_masker if coarse else self.masker)
        return self._explainers[key]

    def tokenize(self, text: str, *, coarse: bool = False,
                 words: int | None = None) -> tuple[list[str], list[tuple[int, int]]]:
        """(segments, spans): segment i is token i plus the separator after it; a token is a
        word, or a stretch of words (the rest of the text past `max_words`, a coarse part).
        `words`: `count_words(text)` when the caller has it."""
        text = collapse_whitespace(text)
        masker = self.coarse_masker if coarse else self.masker
        offsets = masker.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        segments = masker.token_segments(text)[0]
        merged = len(offsets) < (count_words(text) if words is None else words)
        spans = []
        for i, ((start, _), seg) in enumerate(zip(offsets, segments)):
            if merged and (coarse or i == len(offsets) - 1):  # a stretch of words: the whole stretch
                word = seg.rstrip()
            else:
                word = re.split(SPLIT_PATTERN, seg, maxsplit=1)[0]
            spans.append((start, start + len(word)))
        return list(segments), spans

    def _shap_values(self, text: str, class_index: int, budget: int, coarse: bool):
        # PartitionExplainer breaks ties with np.random: make explanations repeatable.
        state = np.random.get_state()
        np.random.seed(self.seed)
        try:
            return self._explainer(int(class_index), coarse)([text], max_evals=budget, batch_size=self.batch_size,
                                                             silent=True)
        finally:
            np.random.set_state(state)

    def explain(self, text: str, class_index: int, *, max_evals: int | None = None,
                time_budget: float | None = OWN_BUDGET) -> TextShapResult:
        """SHAP values of each word of `text` for `class_index` (probability scale): of the
        first `max_words` words one by one and of the rest as one part. `time_budget`
        (seconds, default the instance's; None: unbounded): past it, a coarse explanation
        over COARSE_PARTS stretches of the text. Both say so in `note`."""
        started = time.perf_counter()
        text = collapse_whitespace(text)
        if not text:
            raise ValueError("cannot explain an empty text")
        seconds = self.time_budget if time_budget == OWN_BUDGET else time_budget
        words = count_words(text)
        coarse = False
        with self._lock:
            segments, spans = self.tokenize(text, words=words)
            budget = eval_budget(len(segments), max_evals or self.max_evals)
            self._deadline = None if seconds is None else time.monotonic() + max(0.0, float(seconds))
            try:
                sv = self._shap_values(text, class_index, budget, coarse=False)
            except _OutOfTime:
                coarse = True
                self._deadline = None  # a handful of evaluations: always finishes
                segments, spans = self.tokenize(text, coarse=True, words=words)
                budget = 2 * len(segments) + 1  # every part split off once: one or two model calls
                sv = self._shap_values(text, class_index, budget, coarse=True)
            finally:
                self._deadline = None
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
        if coarse:
            explained = 0
            note = (f"the time limit ({seconds:.1f} s) ran out before every word had its value: "
                    f"the text is explained in {len(segments)} stretches instead")
        else:
            explained = min(words, self.max_words)
            note = (f"only the first {self.max_words:,} of {words:,} words are explained one by one; "
                    "the rest of the text counts as one part" if words > explained else "")
        return TextShapResult(text, int(class_index), label, tokens, base, output, error, budget,
                              time.perf_counter() - started, segments, words, explained, coarse, note)
