"""How much of the fused decision came from the description and how much from the photo.

The fusion is linear in the two models' log-probabilities (`core.models.fusion`), so the fused
logit of every class splits *exactly* into a text part, an image part and a bias. A
single class's logit means little (softmax ignores shifts), so we explain the
**margin** that made the decision: the explained class's fused logit minus that of its
strongest competitor. margin = text + image + bias, exactly (checked).

`text_share` = |text| / (|text| + |image|): the share of the evidence that came from the
description. A part can be negative — that model argued against the class — which is
reported too, along with each model's own top class, so a reviewer sees both "decided by
the photo" and "the two models disagree".

Any class can be explained, not only the prediction: then the strongest competitor is the
predicted class, the margin is negative, and the summary says "'X' is not the
prediction" and which model points away from X — never "decided by" (`predicted`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.models.fusion import EPS

DECISIVE_SHARE = 2 / 3  # one modality carries at least this share → it "decided"
NEUTRAL_SHARE = 0.05  # a part below this share of |text| + |image| neither supports nor opposes


@dataclass
class ModalityShare:
    label: str
    class_index: int
    versus: str | None  # the strongest competing class the margin is measured against
    mode: str  # "fusion", "text only", "image only"
    margin: float  # fused logit(label) - fused logit(versus)
    text: float  # part of the margin from the text model
    image: float  # part of the margin from the image model
    bias: float  # the fusion's intercepts (class priors)
    text_share: float  # in [0, 1]; text_share + image_share == 1
    image_share: float
    decided_by: str  # "description", "photo" or "both"
    text_label: str | None  # each model's own top class
    image_label: str | None
    text_probability: float | None  # each model's probability for `label`
    image_probability: float | None
    disagree: bool  # both models present and their top classes differ
    summary: str
    predicted: bool = True  # the explained class is the fused top class (else margin < 0: it lost)

    def as_dict(self) -> dict:
        return asdict(self)


def _sides(s: "ModalityShare") -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(supporting, opposing) modalities as (name, part), leaving out negligible parts
    (a -0.003 is not "the photo argued against it")."""
    tol = NEUTRAL_SHARE * (abs(s.text) + abs(s.image))
    parts = (("description", s.text), ("photo", s.image))
    return [(n, v) for n, v in parts if v > tol], [(n, v) for n, v in parts if v < -tol]


def _summary(s: "ModalityShare") -> str:
    """One honest sentence. For the predicted class: what decided it, and what argued
    against it. For any other class (a user can explain every class) never "decided
    by": say it is not the prediction, and which models point away from it."""
    parts = [_predicted_head(s) if s.predicted else _other_head(s)]
    if s.disagree:
        parts.append(f"the models disagree: description says '{s.text_label}', photo says '{s.image_label}'")
    return "; ".join(parts) + "."


def _predicted_head(s: "ModalityShare") -> str:
    over = f" for '{s.label}' over '{s.versus}'" if s.versus else f" for '{s.label}'"
    if s.mode != "fusion":
        return f"Decided by the {'description' if s.mode == 'text only' else 'photo'} alone{over}"
    support, opposed = _sides(s)
    against = [name for name, _ in opposed]
    if not against:
        if s.decided_by == "both":
            head = f"Decided by both (description {s.text_share:.0%}, photo {s.image_share:.0%})"
        else:
            share = s.text_share if s.decided_by == "description" else s.image_share
            head = f"Decided by the {s.decided_by} ({share:.0%} of the evidence)"
        return head + over
    if not support:  # only the fusion's class priors carried it
        both = "the description and the photo both" if len(against) == 2 else f"the {against[0]}"
        return f"Decided by the class priors alone{over}; {both} argued against it"
    (name, pro), con = support[0], opposed[0][1]
    share = s.text_share if name == "description" else s.image_share
    by = f"the {name} ({share:.0%} of the evidence)" if pro > -con else f"the class priors and the {name}"
    return f"Decided by {by}{over}; the {against[0]} argued against it"


def _other_head(s: "ModalityShare") -> str:
    head = f"'{s.label}' is not the prediction ('{s.versus}' is)"
    if s.mode != "fusion":
        return head + f": the {'description' if s.mode == 'text only' else 'photo'} alone points away from it"
    toward, away = _sides(s)
    if len(away) == 2:
        return head + f": the description and the photo both point away from '{s.label}'"
    if away and toward:
        (t_name, t_v), (a_name, a_v) = toward[0], away[0]
        if abs(a_v) > t_v:
            return head + f": the {t_name} favours it, but the {a_name} points away from it more strongly"
        return head + f": the {t_name} favours it more than the {a_name} points away, but the class priors favour '{s.versus}'"
    if away:
        return head + f": the {away[0][0]} points away from it"
    return head + f": the class priors favour '{s.versus}'"


def modality_share(labels: list[str], fusion, p_text: np.ndarray | None, p_image: np.ndarray | None,
                   class_index: int | None = None) -> ModalityShare:
    """Split the fused decision for `class_index` (default: the fused top class) between
    text and image. p_text / p_image: each model's probabilities, None if absent."""
    if p_text is None and p_image is None:
        raise ValueError("modality share needs at least one model's probabilities")
    n = len(labels)
    top = lambda p: None if p is None else labels[int(np.argmax(p))]  # noqa: E731
    both = p_text is not None and p_image is not None
    if both and fusion is not None and fusion.fitted:
        mode = "fusion"
        parts = fusion.contributions(np.asarray(p_text, float)[None], np.asarray(p_image, float)[None])
        text_l, image_l, bias_l = parts["text"][0], parts["image"][0], parts["bias"][0]
    else:  # one model decides alone (also when both are present but the bundle has no fusion)
        alone = p_text if p_text is not None else p_image
        mode = "text only" if p_text is not None else "image only"
        logp = np.log(np.asarray(alone, float) + EPS)
        zeros = np.zeros(n)
        text_l, image_l = (logp, zeros) if mode == "text only" else (zeros, logp)
        bias_l = zeros
    logits = text_l + image_l + bias_l
    c = int(np.argmax(logits)) if class_index is None else int(class_index)
    if not 0 <= c < n:
        raise ValueError(f"class index {c} out of range (0..{n - 1})")
    if n > 1:
        others = np.delete(np.arange(n), c)
        r = int(others[np.argmax(logits[others])])
        t, i, b = text_l[c] - text_l[r], image_l[c] - image_l[r], bias_l[c] - bias_l[r]
        margin, versus = logits[c] - logits[r], labels[r]
    else:
        t, i, b, margin, versus = text_l[c], image_l[c], bias_l[c], logits[c], None
    if not np.isclose(t + i + b, margin, rtol=1e-9, atol=1e-9):  # exact by construction
        raise AssertionError(f"modality split does not add up: {t} + {i} + {b} != {margin}")
    total = abs(t) + abs(i)
    if mode == "text only":
        text_share = 1.0
    elif mode == "image only":
        text_share = 0.0
    else:
        text_share = float(abs(t) / total) if total > 0 else 0.5
    image_share = 1.0 - text_share
    decided = ("description" if text_share >= DECISIVE_SHARE else
               "photo" if image_share >= DECISIVE_SHARE else "both")
    share = ModalityShare(
        label=labels[c], class_index=c, versus=versus, mode=mode, margin=float(margin), text=float(t),
        image=float(i), bias=float(b), text_share=text_share, image_share=image_share, decided_by=decided,
        text_label=top(p_text), image_label=top(p_image),
        text_probability=None if p_text is None else float(p_text[c]),
        image_probability=None if p_image is None else float(p_image[c]),
        disagree=bool(both and top(p_text) != top(p_image)), summary="",
        predicted=c == int(np.argmax(logits)),
    )
    share.summary = _summary(share)
    return share
