"""The strategy contract and its registry: a new rung is one file that registers itself.

Strategies share helpers (the linear head, the encoder, the training loop), not ancestors:
the contracts are Protocols, so a federated client or a DDP wrapper can drive any of them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args, runtime_checkable

import numpy as np
from pydantic import Field, ValidationError

from frugalml.config import Budget, Frozen, deep_merge
from frugalml.costs import CostMeter
from frugalml.data.dataset import Dataset, InputKind
from frugalml.data.tabular import TabularSchema
from frugalml.errors import ConfigError, MissingExtraError, installed
from frugalml.metrics import Outcomes


class StrategyConfig(Frozen):
    """Base of every strategy's settings; `kind` is the registry name."""

    kind: str = Field(description="The registry name, e.g. 'lora'.")


@runtime_checkable
class Predictor(Protocol):
    """A fitted model: class probabilities for inputs, saved without pickles.

    `logits` are the raw scores; `predict_proba` is softmax(logits / temperature), where the
    ladder sets `temperature` on validation data (temperature scaling) before saving.
    """

    labels: tuple[str, ...]
    temperature: float

    def logits(self, texts: Sequence[str]) -> np.ndarray: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def save(self, folder: Path) -> dict[str, Any]:
        """Write weights (safetensors/JSON) into `folder`; return what `load` needs.

        The returned spec must include `temperature`.
        """
        ...

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any], labels: tuple[str, ...]) -> Predictor: ...


class Strategy(Protocol):
    """One rung of the ladder."""

    config: StrategyConfig

    def fit(
        self,
        train: Dataset,
        val: Dataset,
        *,
        budget: Budget,
        meter: CostMeter,
        workdir: Path | None = None,
    ) -> Predictor:
        """Train on `train`, select on `val`; stay within `budget` (what is left of the
        ladder's); report FLOPs to `meter`; keep checkpoints in `workdir`, and resume from
        them when it already holds some."""
        ...


# Capabilities: what some predictors can do beyond predicting. Callers ask with isinstance
# (`isinstance(predictor, Embedder)`), never by probing attributes; a new predictor gains a
# capability by having its members, with no base class to inherit.


@runtime_checkable
class Embedder(Predictor, Protocol):
    """A predictor that also turns texts into sentence vectors: what retrieval, out-of-scope
    detection and recommendation build on. Encoder rungs have it, exported or not; TF-IDF
    has not."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit-length rows in the order of `texts`, so that a dot
        product is a cosine similarity."""
        ...


@runtime_checkable
class JointEmbedder(Embedder, Protocol):
    """An embedder that gives logits and sentence vectors from one encoder pass: what a caller
    needing both per text (out-of-scope detection, retrieval) asks for, at the cost of one."""

    def logits_and_embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(logits, unit-length vectors) as `logits` and `embed` would give them."""
        ...


@runtime_checkable
class OnnxExportable(Predictor, Protocol):
    """A predictor whose torch or scikit-learn parts ONNX Runtime can take over, so serving
    it needs neither: what `compress` asks for."""

    onnx_precisions: tuple[str, ...]  # ("fp32",), or ("fp32", "int8") with an encoder to quantize

    def export_onnx(self, folder: Path, *, precision: str = "fp32") -> dict[str, Any]:
        """Write this model into `folder` as `save` would, its parts as ONNX graphs at
        `precision`; return the spec its class's `load` reads, with `format`, `precision`
        and what the export measured (e.g. `fusions`). An exported model exports again at a
        lower precision (fp32 → int8) by quantizing its graph."""
        ...


@runtime_checkable
class TabularPredictor(Predictor, Protocol):
    """A predictor of records (`Dataset.kind == "tabular"`): its schema says which fields a
    record must hold and of what type, what the server checks every request against."""

    schema: TabularSchema


@runtime_checkable
class Explainer(Predictor, Protocol):
    """A predictor that says why: for each input, the features that pushed its score most
    towards the positive class (reason codes)."""

    def explain(self, inputs: Sequence[Any], *, top: int = 3) -> list[list[dict[str, Any]]]:
        """Per input, up to `top` dicts {"feature", "value", "impact", "unit"}, largest
        push towards the positive class first."""
        ...


@runtime_checkable
class FitReport(Predictor, Protocol):
    """What a predictor fresh from `Strategy.fit` tells the ladder about its fit; not saved
    (`load` leaves it empty)."""

    stopped: str  # why training ended before its plan ("deadline"), or ""
    # The logits of the `val` texts given to `fit`, in their order, when fitting computed
    # them anyway (heads are chosen on them): temperature scaling then needs no second pass.
    val_logits: np.ndarray | None


@runtime_checkable
class SelfCalibrated(Predictor, Protocol):
    """A predictor whose logits are calibrated already, by a map fitted on out-of-fold scores
    over all of its training data: the ladder leaves its temperature at 1 rather than refit
    it on the smaller validation split, whose noise would undo the better fit."""

    calibration: str  # how, in a few words ("platt on 5-fold out-of-fold scores"); "": not


@runtime_checkable
class SelfChecking(Predictor, Protocol):
    """A predictor that proves on load that its files fit together, in its own terms: a
    model that is not a text classifier cannot be checked with one text's probabilities."""

    def check(self) -> None:
        """Raise (any exception) when the loaded model cannot answer."""
        ...


@runtime_checkable
class Ranker(SelfChecking, Protocol):
    """A predictor of a ranking task (recommendation): it scores items for queries, so the
    ladder scores it on the rankings it makes (`outcomes`) rather than calibrating classes.
    Its `predict_proba(queries)` is a distribution over its items for each query (what the
    speed measurement times), and `labels` may be empty."""

    def outcomes(self, data: Dataset) -> Outcomes:
        """Relevance and scores (queries by items) on `data`, the split it is evaluated on."""
        ...

    def queries(self, data: Dataset) -> list[str]:
        """Inputs of `predict_proba` drawn from `data`, to time it on."""
        ...


@dataclass(frozen=True)
class Registered:
    """What the registry knows of a strategy."""

    name: str
    factory: Callable[[Any], Strategy]
    config: type[StrategyConfig]
    predictor: type[Predictor]
    cost_rank: int  # ladder order: cheapest first
    extra: str | None  # the pip extra it needs, if any
    needs: tuple[str, ...]  # modules that extra provides
    summary: str
    inputs: tuple[InputKind, ...] = ("text",)  # the data kinds it can train on

    def available(self) -> bool:
        return installed(*self.needs)

    def require(self) -> None:
        if not self.available():
            raise MissingExtraError(f"The '{self.name}' strategy", self.extra or self.name)

    def build(self, **options: Any) -> Strategy:
        """Options override the strategy's defaults key by key (nested settings too)."""
        self.require()
        defaults = self.config.model_validate({}).model_dump(mode="json")
        try:
            config = self.config(**deep_merge(defaults, options))
        except ValidationError as err:
            raise ConfigError(
                f"invalid options for strategy '{self.name}'",
                [
                    f"{self.name}.{'.'.join(map(str, e['loc']))}: {e['msg']} "
                    f"(got {e.get('input')!r})"
                    for e in err.errors()
                ],
            ) from None
        return self.factory(config)


_REGISTRY: dict[str, Registered] = {}
S = TypeVar("S")

# The built-in rungs and the modules that register them, imported on first use: loading a
# bundle imports its own rung only, not every rung's training code.
BUILTIN = {
    "tfidf": "frugalml.strategies.tfidf",
    "frozen_probe": "frugalml.strategies.frozen_probe",
    "hybrid": "frugalml.strategies.hybrid",
    "setfit": "frugalml.strategies.setfit",
    "top_layers": "frugalml.strategies.top_layers",
    "lora": "frugalml.strategies.lora",
    "full": "frugalml.strategies.full",
    # rungs of applications: named here, as serve extensions are, so that loading a bundle
    # finds its rung without importing every application
    **dict.fromkeys(
        ("popularity", "item_knn", "ease", "als", "content"),
        "frugalml.apps.recommend.rungs",
    ),
    "lambdarank": "frugalml.apps.recommend.lambdarank",
    "two_tower": "frugalml.apps.recommend.two_tower",
    "scorecard": "frugalml.apps.credit.scorecard",
    "lightgbm": "frugalml.apps.credit.boosting",
}


def register_strategy(
    name: str,
    *,
    config: type[StrategyConfig],
    predictor: type[Any],
    cost_rank: int,
    extra: str | None = None,
    needs: tuple[str, ...] = (),
    inputs: tuple[InputKind, ...] = ("text",),
) -> Callable[[S], S]:
    """Class decorator: `@register_strategy("lora", config=LoraConfig, ...)`; refuses duplicates.

    `inputs` are the data kinds the rung takes; the ladder skips it on data of another kind.
    """

    def decorate(cls: S) -> S:
        if name in _REGISTRY or BUILTIN.get(name, cls.__module__) != cls.__module__:
            raise ValueError(f"a strategy named '{name}' is already registered")
        unknown = [kind for kind in inputs if kind not in get_args(InputKind)]
        if unknown or not inputs:
            raise ValueError(f"inputs must be kinds of {get_args(InputKind)}, not {inputs!r}")
        kind = config.model_fields["kind"].default
        if kind != name:
            raise ValueError(f"{config.__name__}.kind must default to '{name}', not {kind!r}")
        doc = (getattr(cls, "__doc__", None) or "").strip().splitlines()
        factory: Callable[[Any], Strategy] = cls  # type: ignore[assignment]
        summary = doc[0] if doc else ""
        _REGISTRY[name] = Registered(
            name, factory, config, predictor, cost_rank, extra, needs, summary, inputs
        )
        return cls

    return decorate


def get_strategy(name: str) -> Registered:
    """Look a strategy up by name; an unknown name lists the known ones and the closest."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, strategy_names(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown strategy '{name}' (known: {', '.join(strategy_names())}){hint}")
    return _REGISTRY[name]


def strategy_names() -> list[str]:
    """Registered names, cheapest first (every built-in one imported)."""
    for module in BUILTIN.values():
        importlib.import_module(module)
    return [r.name for r in sorted(_REGISTRY.values(), key=lambda r: r.cost_rank)]


def registered() -> list[Registered]:
    return [_REGISTRY[name] for name in strategy_names()]
