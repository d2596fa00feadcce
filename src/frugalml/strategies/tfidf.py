"""TF-IDF word and character n-grams with a logistic-regression head: the cheapest rung."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from pydantic import Field
from safetensors.numpy import load_file, save_file
from scipy import sparse

from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset
from frugalml.errors import ConfigError
from frugalml.forecast import (
    Forecast,
    memory_growth,
    memory_shortage,
    remembered,
    rss_bytes,
    stopwatch,
    timed_mean,
    warm_up,
)
from frugalml.models.heads import LinearHead, softmax
from frugalml.models.onnx_ngrams import OnnxNgramFeatures, export_ngrams, is_onnx_ngrams_folder

if TYPE_CHECKING:  # scikit-learn is imported when n-grams are used: serving ONNX bundles
    from sklearn.feature_extraction.text import TfidfVectorizer  # never needs it
from frugalml.strategies.base import StrategyConfig, register_strategy


class TfidfConfig(StrategyConfig):
    kind: Literal["tfidf"] = Field("tfidf", description="The registry name.")
    word_ngrams: tuple[int, int] = Field(
        (1, 2), description="Shortest and longest word n-grams (1, 2: words and word pairs)."
    )
    char_ngrams: tuple[int, int] = Field(
        (2, 5), description="Shortest and longest character n-grams, within word boundaries."
    )
    char_min_df: int = Field(2, ge=1, description="Drop character n-grams seen in fewer texts.")
    C: float = Field(10.0, gt=0, description="Inverse L2 strength of the logistic regression.")
    class_weight: Literal["balanced"] | None = Field(
        "balanced", description="'balanced' weighs classes by inverse frequency; None does not."
    )


# Settings that must match between fitting and loading; everything else comes from the files.
_VECTORIZER_KEYS = ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "norm", "smooth_idf")


class NgramFeatures:
    """Word and character n-gram TF-IDF, saved as vocabularies (JSON) + idf (safetensors)."""

    def __init__(self, vectorizers: list[TfidfVectorizer]) -> None:
        self.vectorizers = vectorizers

    @classmethod
    def fit(cls, texts: Sequence[str], config: TfidfConfig) -> tuple[NgramFeatures, Any]:
        """The fitted features and the training matrix (computed once, while fitting)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizers = [
            TfidfVectorizer(ngram_range=config.word_ngrams, sublinear_tf=True, dtype=np.float32),
            TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=config.char_ngrams,
                sublinear_tf=True,
                min_df=config.char_min_df,
                dtype=np.float32,
            ),
        ]
        X = sparse.hstack([v.fit_transform(texts) for v in vectorizers], format="csr")
        return cls(vectorizers), X

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        if not texts:  # scikit-learn refuses an empty batch; the Predictor contract does not
            width = sum(len(v.vocabulary_) for v in self.vectorizers)
            return sparse.csr_matrix((0, width), dtype=np.float32)
        return sparse.hstack([v.transform(texts) for v in self.vectorizers], format="csr")

    def export_onnx(self, folder: Path) -> list[dict[str, Any]]:
        """Write the n-grams as one ONNX graph (counted and weighted in the graph, so serving
        needs no scikit-learn); return the manifest's description of them."""
        return export_ngrams(self.vectorizers, folder).spec()

    def save(self, folder: Path) -> list[dict[str, Any]]:
        specs, arrays = [], {}
        for i, vectorizer in enumerate(self.vectorizers):
            vocab = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
            (folder / f"vocab_{i}.json").write_text(json.dumps(vocab, ensure_ascii=False))
            arrays[f"idf_{i}"] = vectorizer.idf_.astype(np.float64)
            params = vectorizer.get_params()
            specs.append({key: params[key] for key in _VECTORIZER_KEYS})
        save_file(arrays, str(folder / "idf.safetensors"))
        return specs

    @classmethod
    def load(cls, folder: Path, specs: list[dict[str, Any]]) -> NgramFeatures:
        from sklearn.feature_extraction.text import TfidfVectorizer

        arrays = load_file(str(folder / "idf.safetensors"))
        vectorizers = []
        for i, params in enumerate(specs):
            vocab = json.loads((folder / f"vocab_{i}.json").read_text())
            params = {**params, "ngram_range": tuple(params["ngram_range"])}
            vectorizer = TfidfVectorizer(vocabulary=vocab, dtype=np.float32, **params)
            vectorizer.idf_ = arrays[f"idf_{i}"]
            vectorizers.append(vectorizer)
        return cls(vectorizers)


def load_ngrams(folder: Path, spec: dict[str, Any]) -> NgramFeatures | OnnxNgramFeatures:
    """The exported graph when the bundle holds one (no scikit-learn), else the vectorizers.

    The files decide, as for encoders (`encoder.load_encoder`): hybrid bundles compressed
    before n-grams were exported hold an ONNX encoder beside scikit-learn n-grams.
    """
    if is_onnx_ngrams_folder(folder):
        return OnnxNgramFeatures(folder)
    return NgramFeatures.load(folder, spec["vectorizers"])


class TfidfPredictor:
    """Sparse n-gram features → linear head."""

    onnx_precisions: tuple[str, ...] = ("fp32",)  # n-grams and a head: nothing to quantize

    def __init__(
        self,
        ngrams: NgramFeatures | OnnxNgramFeatures,
        head: LinearHead,
        labels: tuple[str, ...],
        temperature: float = 1.0,
    ) -> None:
        self.ngrams = ngrams
        self.head = head
        self.labels = labels
        self.temperature = temperature

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.head.logits(self.ngrams.transform(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts) / self.temperature)

    def save(self, folder: Path) -> dict[str, Any]:
        specs = self.ngrams.save(folder)
        self.head.save(folder / "head.safetensors")
        return {"vectorizers": specs, "temperature": self.temperature}

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Like `save`, with the n-grams as an ONNX graph; the head stays."""
        if precision not in self.onnx_precisions:
            raise ConfigError(
                f"a TF-IDF model exports at fp32 only (nothing to quantize); got {precision!r}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        specs = self.ngrams.export_onnx(folder)
        self.head.save(folder / "head.safetensors")
        return {
            "vectorizers": specs,
            "temperature": self.temperature,
            "format": "onnx",
            "precision": precision,
        }

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> TfidfPredictor:
        head = LinearHead.load(folder / "head.safetensors")
        return cls(load_ngrams(folder, spec), head, labels, float(spec["temperature"]))


@register_strategy("tfidf", config=TfidfConfig, predictor=TfidfPredictor, cost_rank=0)
class TfidfStrategy:
    """Word and character n-gram TF-IDF with logistic regression: seconds on a CPU, often enough."""

    def __init__(self, config: TfidfConfig) -> None:
        self.config = config

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> TfidfPredictor:
        c = self.config
        ngrams, X = NgramFeatures.fit(train.texts, c)
        head = LinearHead.fit(X, train.y, len(train.labels), C=c.C, class_weight=c.class_weight)
        return TfidfPredictor(ngrams, head, train.labels)

    def forecast(self, train: Dataset, val: Dataset) -> Forecast:
        """Fit on a subsample; scale vectorizing linearly and the head by lbfgs' work
        (`head_scale`: more iterations, each over more values and a vocabulary that grows
        more slowly than the data).

        The head's memory is forecast with the vocabulary extrapolated from the subsample's
        (Heaps' law): when even the subsample's cannot fit, the head is not fitted, nor timed.
        """
        c, n = self.config, len(train)
        warm_up(("scikit-learn",), import_sklearn)
        base = rss_bytes()
        cal = ngram_calibration(train, c)
        k = int(np.count_nonzero(train.class_counts()))
        memory = cal.memory(n, LinearHead.fit_bytes(n, cal.features_full, k))
        what = f"the logistic-regression head ({k} classes × ≥{cal.features:,} features)"
        shortage = memory_shortage(LinearHead.fit_bytes(n, cal.features, k), what)
        if shortage:
            return Forecast(0.0, 0.0, f"not timed: {shortage}", memory, base + memory)
        head = timed_mean(
            lambda: LinearHead.fit(
                cal.X, cal.sample.y, len(train.labels), C=c.C, class_weight=c.class_weight
            ),
            "",
        )
        nnz = cal.X.nnz * n / cal.n_sub  # stored values grow with examples
        scale = head_scale(cal.n_sub, n, cal.X.nnz, nnz, cal.features, cal.features_full, k)
        vectorize = cal.vectorize.scaled(n / cal.n_sub, f"n-grams of {cal.n_sub} of {n}, linearly")
        fit = head.scaled(scale, f"head on {cal.n_sub}, scaled {scale:.1f}x by lbfgs' work")
        return (vectorize + fit).with_memory(memory, base)


# What one lbfgs iteration of the multinomial head costs: per stored feature value, a fixed
# part (sparse indexing) and a part per class (X @ W and X.T @ G), and per weight (classes x
# columns: L-BFGS-B's history), in units of a weight's cost; and how iterations grow with
# examples (weaker regularization). From per-iteration times and iteration counts of the
# tfidf and hybrid heads at 1/16 to all of Banking77 (77 classes) and PhraseBank (3 classes).
VALUE_COST, VALUE_COST_PER_CLASS, ITERATIONS_EXPONENT = 0.29, 0.016, 0.27


def head_scale(
    n_sub: int, n: int, nnz_sub: float, nnz: float, width_sub: int, width: int, classes: int
) -> float:
    """How much longer the head takes on `n` examples than on `n_sub`: iterations times the
    work of one (stored values, and weights: classes x `width` columns)."""
    per_value = VALUE_COST + VALUE_COST_PER_CLASS * classes
    per_iteration = (per_value * nnz + classes * width) / (
        per_value * nnz_sub + classes * width_sub
    )
    return float((n / n_sub) ** ITERATIONS_EXPONENT * per_iteration)


@dataclass(frozen=True)
class NgramCalibration:
    """N-gram features fitted on a subsample, timed: what the tfidf and hybrid forecasts share."""

    key: tuple[str, str]
    n: int
    sample: Dataset
    X: Any  # the subsample's features (csr)
    vectorize: Forecast  # fitting the vectorizers on the subsample
    features: int  # the subsample's vocabulary
    features_full: int  # the whole training set's, extrapolated
    vectorize_growth: int  # peak RSS growth while vectorizing the subsample

    @property
    def n_sub(self) -> int:
        return len(self.sample)

    def memory(self, n: int, head_bytes: int) -> int:
        """Vectorizing's growth scaled to `n` examples (the matrix grows with examples, the
        vocabulary as extrapolated), plus the head's solver, which runs while they are held."""
        matrix = int(self.X.nnz * 12 * 2)  # float32 values + int32 columns, hstack's copy too
        rest = max(0, self.vectorize_growth - matrix) * self.features_full / max(1, self.features)
        return int(matrix * n / self.n_sub + rest) + head_bytes


def ngram_calibration(train: Dataset, config: TfidfConfig) -> NgramCalibration:
    """Vectorize a subsample of `train` (1/8, at least 400 examples), once per data and
    settings in this process; the vocabulary of its first half too, for Heaps' law."""
    key = (train.fingerprint(), config.model_dump_json())
    return cast(
        NgramCalibration, remembered(("ngrams", *key), lambda: _calibrate(train, config, key))
    )


def import_sklearn() -> None:
    """What fitting n-grams and a head imports (1.4 CPU-s): scaled with a subsample's timing,
    it once over-forecast tfidf by a third on Banking77."""
    import scipy.optimize  # noqa: F401
    import sklearn.feature_extraction.text
    import sklearn.linear_model  # noqa: F401


def _calibrate(train: Dataset, config: TfidfConfig, key: tuple[str, str]) -> NgramCalibration:
    n = len(train)
    n_sub = min(n, max(400, n // 8))
    sample = train.subset(np.sort(np.random.default_rng(0).permutation(n)[:n_sub]))
    with memory_growth() as growth, stopwatch() as vectorizing:
        _, X = NgramFeatures.fit(sample.texts, config)
    features = int(X.shape[1])
    full = features
    if n_sub < n:  # vocabulary ~ examples^beta; beta from the subsample's halves
        half = int(NgramFeatures.fit(sample.texts[: n_sub // 2], config)[1].shape[1])
        beta = float(np.clip(np.log(features / max(1, half)) / np.log(n_sub / (n_sub // 2)), 0, 1))
        full = int(features * (n / n_sub) ** beta)
    return NgramCalibration(
        key, n, sample, X, vectorizing.forecast(""), features, full, growth.bytes
    )
