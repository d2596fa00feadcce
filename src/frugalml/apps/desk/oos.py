"""Out-of-scope detectors, and the threshold that catches enough of them at least cost.

Each detector turns what the intent model says about a question (calibrated probabilities,
raw logits, its sentence vector) into one score, higher = more likely out of scope. `build`
fits them all, compares them on validation (in-scope questions and out-of-scope examples), and
keeps the one whose threshold meets the wanted out-of-scope recall while losing the fewest
in-scope questions that the model answered correctly.

Detectors are arrays and settings only (safetensors + JSON), so a desk folder holds no pickles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from frugalml.models.vector_index import VectorIndex

KNN_KS = (1, 5, 10)  # neighbours tried for the kNN detector; the best on validation is kept
# The oos-intent head's inverse regularization: on Banking77 (25% of intents out of scope) C=100
# gave test AUROC 0.984-0.990 over 3 seeds, C=10 0.976-0.985; the in-scope rows are plentiful.
OOS_INTENT_C = 100.0


@dataclass(frozen=True)
class Signals:
    """What the intent model says about a batch of questions."""

    logits: np.ndarray  # (n, classes), raw
    proba: np.ndarray  # (n, classes), calibrated
    vectors: np.ndarray  # (n, dim), unit length


class Detector(Protocol):
    name: str

    def score(self, signals: Signals) -> np.ndarray:
        """(n,) out-of-scope scores, higher = more likely out of scope."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """What to save (as safetensors, keys prefixed with the detector's name)."""
        ...

    def settings(self) -> dict[str, Any]: ...


class MaxProb:
    """1 - the maximum calibrated probability (the classic baseline)."""

    name = "max_prob"

    def score(self, signals: Signals) -> np.ndarray:
        return np.asarray(1.0 - signals.proba.max(1), dtype=np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def settings(self) -> dict[str, Any]:
        return {}


class Energy:
    """Negative free energy -T·logsumexp(logits/T): unlike a softmax, it keeps how large the
    logits are, which is small for inputs unlike the training data (Liu et al., 2020)."""

    name = "energy"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def score(self, signals: Signals) -> np.ndarray:
        z = signals.logits.astype(np.float64) / self.temperature
        top = z.max(1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(1))
        return np.asarray(-self.temperature * lse)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class Knn:
    """1 - cosine similarity to the k-th nearest training question (Sun et al., 2022); an
    HNSW graph finds it when the training questions are many (`frugalml.models.vector_index`)."""

    name = "knn"

    def __init__(self, train_vectors: np.ndarray | VectorIndex, k: int = 1) -> None:
        self.neighbours = (
            train_vectors if isinstance(train_vectors, VectorIndex) else VectorIndex(train_vectors)
        )
        self.train = self.neighbours.vectors
        self.k = min(k, len(self.train))

    def score(self, signals: Signals) -> np.ndarray:
        _, sims = self.neighbours.search(signals.vectors, self.k)
        return np.asarray(1.0 - sims[:, self.k - 1], dtype=np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"train": self.train, **self.neighbours.arrays()}

    def settings(self) -> dict[str, Any]:
        return {"k": self.k}


class Mahalanobis:
    """Smallest Mahalanobis distance to a class mean, with one shared, shrunk covariance
    (Lee et al., 2018; Podolskiy et al., 2021 for intents)."""

    name = "mahalanobis"

    def __init__(self, means: np.ndarray, precision: np.ndarray) -> None:
        self.means = np.asarray(means, dtype=np.float32)
        self.precision = np.asarray(precision, dtype=np.float32)

    @classmethod
    def fit(cls, vectors: np.ndarray, y: np.ndarray, n_classes: int) -> Mahalanobis:
        x = vectors.astype(np.float64)
        means = np.stack([x[y == c].mean(0) for c in range(n_classes)])
        centred = x - means[y]
        cov = centred.T @ centred / max(len(x) - 1, 1)
        shrink = 0.1 * np.trace(cov) / len(cov)  # the ridge keeps few-shot classes invertible
        precision = np.linalg.inv(cov + shrink * np.eye(len(cov)))
        return cls(means, precision)

    def score(self, signals: Signals) -> np.ndarray:
        x = signals.vectors.astype(np.float32)
        xp = x @ self.precision
        # (x-μ)ᵀP(x-μ) = xᵀPx - 2xᵀPμ + μᵀPμ, for every class at once
        mp = (self.means @ self.precision * self.means).sum(1)
        d = (xp * x).sum(1, keepdims=True) - 2 * xp @ self.means.T + mp[None, :]
        return np.asarray(d.min(1), dtype=np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"means": self.means, "precision": self.precision}

    def settings(self) -> dict[str, Any]:
        return {}


class OosClass:
    """A logistic model on the sentence vectors trained on in-scope vs out-of-scope examples:
    the "oos class", available only when examples of out-of-scope questions exist."""

    name = "oos_class"

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        self.coef = np.asarray(coef, dtype=np.float32).reshape(-1)
        self.intercept = float(intercept)

    @classmethod
    def fit(cls, inscope: np.ndarray, oos: np.ndarray, seed: int = 0) -> OosClass:
        from sklearn.linear_model import LogisticRegression

        x = np.vstack([inscope, oos])
        y = np.r_[np.zeros(len(inscope)), np.ones(len(oos))]
        model = LogisticRegression(C=10.0, class_weight="balanced", max_iter=2000)
        model.fit(x, y)
        return cls(model.coef_[0], float(model.intercept_[0]))

    def score(self, signals: Signals) -> np.ndarray:
        z = signals.vectors.astype(np.float64) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef}

    def settings(self) -> dict[str, Any]:
        return {"intercept": self.intercept}


class OosIntent:
    """Out of scope as one more intent: a softmax head over the in-scope intents plus `oos`,
    trained on the sentence vectors (the "oos class" of Larson et al., 2019); score = the oos
    logit minus the best in-scope one. Unlike `OosClass`'s single hyperplane, each in-scope
    intent gets its own boundary against out-of-scope, which is what separates held-out intents
    of the same bank (Banking77: AUROC 0.98-0.99 against 0.92-0.96). Like `OosClass`, it only
    knows the kinds of out-of-scope question it was shown (see docs/design-notes.md)."""

    name = "oos_intent"

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef = np.asarray(coef, dtype=np.float32)  # (in-scope intents + 1, dim); oos last
        self.intercept = np.asarray(intercept, dtype=np.float32)

    @classmethod
    def fit(cls, inscope: np.ndarray, y: np.ndarray, n_classes: int, oos: np.ndarray) -> OosIntent:
        from frugalml.models.heads import LinearHead

        x = np.vstack([inscope, oos])
        labels = np.r_[y, np.full(len(oos), n_classes)]
        head = LinearHead.fit(x, labels, n_classes + 1, C=OOS_INTENT_C, max_iter=1000)
        return cls(head.coef, head.intercept)

    def score(self, signals: Signals) -> np.ndarray:
        z = signals.vectors.astype(np.float64) @ self.coef.T.astype(np.float64) + self.intercept
        return np.asarray(z[:, -1] - z[:, :-1].max(1))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": self.intercept}

    def settings(self) -> dict[str, Any]:
        return {}


def restore(name: str, settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> Detector:
    """A saved detector back from its settings and arrays."""
    if name == "max_prob":
        return MaxProb()
    if name == "energy":
        return Energy(float(settings.get("temperature", 1.0)))
    if name == "knn":
        return Knn(VectorIndex(arrays["train"], graph=arrays.get("hnsw")), int(settings["k"]))
    if name == "mahalanobis":
        return Mahalanobis(arrays["means"], arrays["precision"])
    if name == "oos_class":
        return OosClass(arrays["coef"], float(settings["intercept"]))
    if name == "oos_intent":
        return OosIntent(arrays["coef"], arrays["intercept"])
    if name == "either":
        return restore_either(settings, arrays)
    raise ValueError(f"unknown out-of-scope detector {name!r}")


# -- measuring and choosing ------------------------------------------------------------------


def auroc(inscope: np.ndarray, oos: np.ndarray) -> float:
    """P(an out-of-scope score > an in-scope one), ties counted half (Mann-Whitney U)."""
    if len(inscope) == 0 or len(oos) == 0:
        return math.nan
    scores = np.r_[inscope, oos]
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    u = ranks[len(inscope) :].sum() - len(oos) * (len(oos) + 1) / 2
    return float(u / (len(inscope) * len(oos)))


def fpr_at_tpr(inscope: np.ndarray, oos: np.ndarray, tpr: float = 0.95) -> float:
    """Share of in-scope questions flagged when the threshold catches `tpr` of out-of-scope."""
    t = threshold_for_recall(oos, tpr)
    return float(np.mean(inscope >= t))


def threshold_for_recall(oos: np.ndarray, recall: float) -> float:
    """The highest threshold (score ≥ t flags) that flags at least `recall` of `oos`."""
    ordered = np.sort(oos)[::-1]
    need = max(1, math.ceil(recall * len(ordered) - 1e-9))
    return float(ordered[min(need, len(ordered)) - 1])


@dataclass(frozen=True)
class Choice:
    """A detector's operating point on validation."""

    detector: str
    threshold: float
    auroc: float
    fpr95: float
    oos_recall: float
    inscope_loss: float  # share of in-scope questions answered correctly that it flags
    inscope_flagged: float

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in vars(self).items()
        }


def operating_point(
    name: str,
    inscope: np.ndarray,
    oos: np.ndarray,
    correct: np.ndarray,
    recall: float,
) -> Choice:
    t = threshold_for_recall(oos, recall)
    flagged = inscope >= t
    return Choice(
        name,
        t,
        auroc(inscope, oos),
        fpr_at_tpr(inscope, oos),
        float(np.mean(oos >= t)),
        float(np.mean(flagged & correct)),
        float(np.mean(flagged)),
    )


def fit_detectors(
    train: Signals,
    train_y: np.ndarray,
    n_classes: int,
    *,
    oos_train: np.ndarray | None = None,
    temperature: float = 1.0,
) -> list[Detector]:
    """Every detector this data allows (the oos class and intent only with out-of-scope
    examples)."""
    detectors: list[Detector] = [MaxProb(), Energy(1.0)]
    neighbours = VectorIndex(train.vectors)  # one graph (when large) for every k
    detectors += [Knn(neighbours, k) for k in KNN_KS if k <= len(train.vectors)]
    detectors.append(Mahalanobis.fit(train.vectors, train_y, n_classes))
    if oos_train is not None:
        detectors += _learned(train, train_y, n_classes, oos_train)
    return detectors


def label(detector: Detector) -> str:
    """'knn' → 'knn(k=5)': variants of one detector told apart in reports."""
    if isinstance(detector, Either):
        return f"either({', '.join(label(p) for p in detector.parts)})"
    settings = detector.settings()
    return f"knn(k={settings['k']})" if detector.name == "knn" else detector.name


def choose(
    detectors: Sequence[Detector],
    inscope: Signals,
    oos: Signals,
    correct: np.ndarray,
    recall: float,
) -> tuple[Detector, Choice, list[Choice]]:
    """The detector whose threshold meets `recall` on validation with the least in-scope loss
    (ties: higher AUROC); every detector's operating point for the report."""
    choices = [
        operating_point(label(d), d.score(inscope), d.score(oos), correct, recall)
        for d in detectors
    ]
    best = min(range(len(choices)), key=lambda i: (choices[i].inscope_loss, -choices[i].auroc))
    return detectors[best], choices[best], choices


# -- choosing for kinds of question no example showed ----------------------------------------

LEARNED = ("oos_class", "oos_intent")  # the detectors that learn from out-of-scope examples
# Out-of-scope examples are cut into this many k-means groups for the held-out-group choice:
# each learned detector is judged on the groups it was not fitted on. Banking77: 3 groups of
# 5-19 held-out intents' examples; each fold refits oos_intent (~15 s there).
OOS_GROUPS = 3
SEEN_SHARE = 0.3  # of the other groups' examples, held out as known kinds in each refit
MIN_PER_GROUP = 5  # fewer examples than groups times this: no held-out-group choice


class Either:
    """Flags a question when any of its parts would, each at the same in-scope flag rate:
    the score is the largest of the parts' ranks among the in-scope validation scores. With
    `oos_intent` and kNN as parts, the kinds of out-of-scope question the examples showed are
    caught by the first, and new kinds (far from every training question) by the second."""

    name = "either"

    def __init__(self, parts: Sequence[Detector], references: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.references = [np.sort(np.asarray(r, dtype=np.float64)) for r in references]

    @classmethod
    def fit(cls, parts: Sequence[Detector], val: Signals) -> Either:
        return cls(parts, [p.score(val) for p in parts])

    def score(self, signals: Signals) -> np.ndarray:
        ranks = [
            in_scope_rank(p.score(signals), ref)
            for p, ref in zip(self.parts, self.references, strict=True)
        ]
        return np.asarray(np.max(ranks, axis=0), dtype=np.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"ref{i}": r for i, r in enumerate(self.references)}
        for i, p in enumerate(self.parts):
            out.update({f"part{i}.{k}": v for k, v in p.arrays().items()})
        return out

    def settings(self) -> dict[str, Any]:
        return {"parts": [{"name": p.name, "settings": p.settings()} for p in self.parts]}


def restore_either(settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> Either:
    parts = []
    for i, part in enumerate(settings["parts"]):
        prefix = f"part{i}."
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        parts.append(restore(part["name"], part["settings"], own))
    return Either(parts, [arrays[f"ref{i}"] for i in range(len(parts))])


def in_scope_rank(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Share of the (sorted) in-scope reference scores at or below each score: one scale on
    which detectors, and the same detector fitted on different examples, compare."""
    return np.searchsorted(reference, scores, side="right") / max(len(reference), 1)


def combinations(detectors: Sequence[Detector], val: Signals) -> list[Detector]:
    """`oos_intent` either-or each kNN variant (none without `oos_intent`)."""
    learned = [d for d in detectors if d.name == "oos_intent"]
    return [Either.fit([learned[0], d], val) for d in detectors if learned and d.name == "knn"]


def oos_groups(vectors: np.ndarray, n_groups: int = OOS_GROUPS, seed: int = 0) -> np.ndarray:
    """k-means groups of the out-of-scope examples: stand-ins for kinds of question, since
    examples carry no labels saying which kind they are."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=n_groups, n_init=4, random_state=seed)
    return np.asarray(model.fit_predict(vectors.astype(np.float64)))


def choose_held_out_groups(
    train: Signals,
    train_y: np.ndarray,
    n_classes: int,
    val: Signals,
    correct: np.ndarray,
    oos: Signals,
    recall: float,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[Detector, Choice, list[Choice]]:
    """Like `choose`, but judging each detector on kinds of out-of-scope question it never
    saw (`held_out_group_candidates`); the least in-scope loss at `recall` wins (ties: AUROC)."""
    detectors, choices = held_out_group_candidates(
        train, train_y, n_classes, val, correct, oos, recall, groups=groups, seed=seed
    )
    best = min(range(len(choices)), key=lambda i: (choices[i].inscope_loss, -choices[i].auroc))
    return detectors[best], choices[best], choices


def held_out_group_candidates(
    train: Signals,
    train_y: np.ndarray,
    n_classes: int,
    val: Signals,
    correct: np.ndarray,
    oos: Signals,
    recall: float,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[list[Detector], list[Choice]]:
    """Every detector (with `Either` combinations) fitted on all examples `oos`, and its
    operating point judged on out-of-scope questions held out from its fitting, half of new
    kinds and half of kinds it was shown (a desk meets both).

    The examples are cut into groups (k-means unless given). A detector that learns from
    examples is refitted once per group without that group and without a random
    `SEEN_SHARE` of the other groups' examples; it scores the group (new kinds) and those
    examples (known kinds, unseen questions): cross-fitting, so one that only knows the kinds
    it was shown looks as it will on new kinds. Scores are compared as ranks among the in-scope
    validation scores (the refitted detectors' scales differ); the rank meeting `recall` on
    the balanced mix becomes each final detector's threshold (its score at that rank)."""
    groups = oos_groups(oos.vectors, seed=seed) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    free = fit_detectors(train, train_y, n_classes)
    learned = _learned(train, train_y, n_classes, oos.vectors)
    final = [*free, *learned, *combinations([*free, *learned], val)]
    val_scores = {label(d): d.score(val) for d in final}
    refs = {name: np.sort(v) for name, v in val_scores.items()}
    n = len(oos.vectors)
    new_kinds = {name: np.empty(n) for name in val_scores}
    known: dict[str, list[np.ndarray]] = {name: [] for name in val_scores}
    known_at: list[np.ndarray] = []
    for g in np.unique(groups):
        fold = groups == g
        others = np.nonzero(~fold)[0]
        held = others[rng.random(len(others)) < SEEN_SHARE]
        fitted = _learned(
            train,
            train_y,
            n_classes,
            np.delete(oos.vectors, np.r_[np.nonzero(fold)[0], held], axis=0),
        )
        known_at.append(held)
        for d in [*fitted, *combinations([*free, *fitted], val)]:
            ref = np.sort(d.score(val))
            new_kinds[label(d)][fold] = in_scope_rank(d.score(_subset(oos, fold)), ref)
            known[label(d)].append(in_scope_rank(d.score(_subset(oos, held)), ref))
    where = np.concatenate(known_at)
    for d in free:
        new_kinds[label(d)] = in_scope_rank(d.score(oos), refs[label(d)])
        known[label(d)] = [new_kinds[label(d)][where]]
    m = min(n, len(where))
    pick_new, pick_known = rng.permutation(n)[:m], rng.permutation(len(where))[:m]
    choices = []
    for d in final:
        name = label(d)
        mix = np.r_[new_kinds[name][pick_new], np.concatenate(known[name])[pick_known]]
        point = operating_point(
            name, in_scope_rank(val_scores[name], refs[name]), mix, correct, recall
        )
        choices.append(_with_threshold(point, rank_threshold(val_scores[name], point.threshold)))
    return final, choices


def rank_threshold(inscope: np.ndarray, rank: float) -> float:
    """The score threshold t with (score ≥ t) ⇔ (in-scope rank of score ≥ `rank`)."""
    ordered = np.sort(inscope)
    need = math.ceil(rank * len(ordered) - 1e-9)
    return float(ordered[need - 1]) if need >= 1 else float(ordered[0]) - 1.0


def _with_threshold(choice: Choice, threshold: float) -> Choice:
    return Choice(**{**vars(choice), "threshold": threshold})


def _learned(
    train: Signals, train_y: np.ndarray, n_classes: int, oos: np.ndarray
) -> list[Detector]:
    if len(oos) < 2:
        return []
    return [
        OosClass.fit(train.vectors, oos),
        OosIntent.fit(train.vectors, train_y, n_classes, oos),
    ]


def _subset(signals: Signals, keep: np.ndarray) -> Signals:
    return Signals(signals.logits[keep], signals.proba[keep], signals.vectors[keep])
