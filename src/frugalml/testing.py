"""`check_strategy`: the contract every rung must pass, in the manner of scikit-learn's
`check_estimator`.

The ladder, the bundle and the server rely on promises no type checker sees: probabilities
that sum to 1, a prediction that does not depend on the other texts in its batch (the
server's micro-batcher groups requests from different clients), a bundle that predicts what
the fitted model did and holds no pickles. One call checks them all on small data and lists
every broken promise at once:

    from frugalml.testing import check_strategy
    check_strategy("my_rung")                       # the embedded demo data
    check_strategy("lora", options={"backbone": "path/to/tiny-bert"})

Imports stay inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import csv
import pickletools
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from frugalml.config import Budget
    from frugalml.costs import CostCard
    from frugalml.data.dataset import Dataset
    from frugalml.strategies.base import Predictor, Registered

# Texts that have crashed tokenizers and vectorizers: empty, blank, zero-width, non-Latin
# scripts, emoji, one long word, and far more words than any encoder's max_length.
ODD_TEXTS = (
    "",
    " ",
    "\n\t ",
    "\u200b\u200d",
    "café crème, naïve façade — 50 €",
    "カードが届きません",
    "بطاقتي لم تصل",
    "💳🙂🙃 ??? !!!",
    "x" * 2_000,
    " ".join(["my card has not arrived yet"] * 200),
)

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """One check of the contract: its name, whether it held, and what was seen."""

    name: str
    status: Status
    detail: str = ""


@dataclass
class StrategyReport:
    """Every check run on one rung, and what was measured on the way."""

    strategy: str
    checks: list[CheckResult] = field(default_factory=list)
    fit_card: CostCard | None = None  # the first fit's cost card
    batch_max_diff: float | None = None  # largest |batch - alone| probability difference
    determinism_max_diff: float | None = None  # largest difference between two fits
    # what the predictor says it can do (strategies.base): "Embedder", "OnnxExportable",
    # "FitReport", and "val_logits" when its fit reported the validation logits
    capabilities: list[str] = field(default_factory=list)
    tolerance: float = 1e-6

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == "failed"]

    def check(self, name: str) -> CheckResult:
        """The result of the check called `name`."""
        found = [c for c in self.checks if c.name == name]
        if not found:
            raise KeyError(f"no check named {name!r}; ran: {[c.name for c in self.checks]}")
        return found[0]

    def __str__(self) -> str:
        lines = [f"check_strategy('{self.strategy}'): {self._summary()}"]
        lines += [
            f"  {c.status:<7} {c.name}" + (f": {c.detail}" if c.detail else "") for c in self.checks
        ]
        return "\n".join(lines)

    def _summary(self) -> str:
        failed, skipped = len(self.failures), sum(c.status == "skipped" for c in self.checks)
        parts = [f"{len(self.checks) - failed - skipped} passed"]
        parts += [f"{failed} failed"] if failed else []
        parts += [f"{skipped} skipped"] if skipped else []
        return ", ".join(parts)


class StrategyCheckError(AssertionError):
    """A rung broke its contract; `report` holds every check, the message every failure."""

    def __init__(self, report: StrategyReport) -> None:
        self.report = report
        failures = [f"  - [{report.strategy}] {c.name}: {c.detail}" for c in report.failures]
        super().__init__(
            f"strategy '{report.strategy}' fails {len(failures)} of {len(report.checks)} "
            "checks:\n" + "\n".join(failures)
        )


class _CheckError(Exception):
    """Raised inside a check with the message its report line carries."""


def check_strategy(
    strategy: str | Registered,
    train: Dataset | None = None,
    val: Dataset | None = None,
    *,
    test: Dataset | None = None,
    options: Mapping[str, Any] | None = None,
    backbone: str | Path | None = None,
    budget: Budget | None = None,
    deterministic: bool = True,
    tolerance: float = 1e-6,
    raise_on_failure: bool = True,
) -> StrategyReport:
    """Fit the registered rung `strategy` on `train`/`val` and check its contract.

    Without data, the embedded demo (bank intents) is split into train, val and test.
    `options` override the rung's config (as `frugalml.fit(options={name: ...})` does);
    `backbone` sets the `backbone` option of rungs that have one (e.g. a tiny test model).
    `test` (default: the demo's test split when the demo is used, else `val`) gives held-out
    texts; with its labels, the rung must beat twice the chance accuracy on them.
    `deterministic=False` skips the second fit for a rung that cannot promise the same
    result twice for the same seed. `tolerance` bounds, in probability, how far predicting a
    text alone, in a subset or after a refit may move it. Raises `StrategyCheckError` (an
    AssertionError) listing every failed check, unless `raise_on_failure` is False; returns
    the report otherwise.
    """
    from frugalml.config import Budget
    from frugalml.strategies.base import get_strategy

    name = strategy if isinstance(strategy, str) else strategy.name
    entry = get_strategy(name)
    if train is None or val is None:
        if train is not None or val is not None:
            raise ValueError("pass both train and val, or neither (for the demo data)")
        train, val, demo_test = demo_splits()
        test = demo_test if test is None else test
    run = _Run(
        report=StrategyReport(name, tolerance=tolerance),
        entry=entry,
        given=None if isinstance(strategy, str) else strategy,
        train=train,
        val=val,
        test=val if test is None else test,
        options=_with_backbone(entry, dict(options or {}), backbone),
        budget=budget or Budget(max_wall_s=300),
        tolerance=tolerance,
    )
    with tempfile.TemporaryDirectory(prefix="frugalml-check-") as tmp:
        run.execute(Path(tmp), deterministic=deterministic)
    if raise_on_failure and not run.report.passed:
        raise StrategyCheckError(run.report)
    return run.report


def demo_splits(seed: int = 0) -> tuple[Dataset, Dataset, Dataset]:
    """Train, val and test splits of the embedded demo (560 bank questions, 14 intents),
    read with the csv module alone: no pandas for a check."""
    from frugalml.data.dataset import Dataset
    from frugalml.data.demo import DEMO_INTENTS
    from frugalml.data.split import stratified_split

    with DEMO_INTENTS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    data = Dataset.from_lists([r["text"] for r in rows], [r["label"] for r in rows], name="demo")
    splits = stratified_split(data, seed=seed)
    return splits.train, splits.val, splits.test


def _with_backbone(
    entry: Registered, options: dict[str, Any], backbone: str | Path | None
) -> dict[str, Any]:
    if backbone is not None and "backbone" in entry.config.model_fields:
        options.setdefault("backbone", str(backbone))
    return options


@dataclass
class _Run:
    """One check_strategy call: the fitted predictor and reloaded bundle the checks share."""

    report: StrategyReport
    entry: Registered
    given: Registered | None
    train: Dataset
    val: Dataset
    test: Dataset
    options: dict[str, Any]
    budget: Budget
    tolerance: float
    predictor: Any = None
    config: dict[str, Any] = field(default_factory=dict)  # the fitted config, as JSON
    reloaded: Any = None
    bundle: Path | None = None

    def execute(self, tmp: Path, *, deterministic: bool) -> None:
        self._check("registered", self._registered)
        self._check("config", self._config)
        self._check("fit", lambda: self._fit(tmp / "fit"))
        fitted = ("a fitted predictor (fit failed)", self.predictor is not None)
        for name, check in [
            ("predictor", self._predictor),
            ("labels", self._labels),
            ("predict_proba", self._predict_proba),
            ("logits", self._logits),
            ("learns", self._learns),
            ("empty_input", self._empty_input),
            ("odd_texts", self._odd_texts),
            ("batch_invariance", self._batch_invariance),
            ("capabilities", self._capabilities),
        ]:
            self._check(name, check, needs=fitted)
        if deterministic:
            self._check("deterministic", lambda: self._deterministic(tmp / "refit"), needs=fitted)
        else:
            self.report.checks.append(
                CheckResult("deterministic", "skipped", "deterministic=False")
            )
        self._check("bundle_roundtrip", lambda: self._roundtrip(tmp / "bundle"), needs=fitted)
        self._check("no_pickles", lambda: self._no_pickles(tmp / "saved"), needs=fitted)
        loaded = ("a reloaded bundle (bundle_roundtrip failed)", self.reloaded is not None)
        self._check("bundle_edge_inputs", self._bundle_edge_inputs, needs=loaded)

    def _check(
        self, name: str, fn: Callable[[], str | None], needs: tuple[str, bool] = ("", True)
    ) -> None:
        if not needs[1]:
            self.report.checks.append(CheckResult(name, "skipped", f"needs {needs[0]}"))
            return
        try:
            detail = fn() or ""
        except _CheckError as failure:
            self.report.checks.append(CheckResult(name, "failed", str(failure)))
        except Exception as err:  # a crash is a failed check, reported with where it happened
            where = traceback.extract_tb(err.__traceback__)[-1]
            self.report.checks.append(
                CheckResult(
                    name,
                    "failed",
                    f"raised {type(err).__name__}: {err} "
                    f"(at {Path(where.filename).name}:{where.lineno})",
                )
            )
        else:
            self.report.checks.append(CheckResult(name, "passed", detail))

    # -- registration and config ---------------------------------------------------
    def _registered(self) -> str:
        from frugalml.strategies.base import strategy_names

        if self.entry.name not in strategy_names():
            raise _CheckError("get_strategy finds it but strategy_names() does not list it")
        if self.given is not None and self.given != self.entry:
            raise _CheckError(
                "the Registered entry passed is not the one the registry holds under its "
                "name; a bundle would load the registry's"
            )
        return ""

    def _config(self) -> str:
        from pydantic import ValidationError

        config = self.entry.config
        try:
            defaults = config.model_validate({})
        except ValidationError as err:
            raise _CheckError(
                f"{config.__name__}() does not validate with its defaults: {err}"
            ) from None
        if defaults.kind != self.entry.name:
            kind = defaults.kind
            raise _CheckError(f"{config.__name__}.kind is {kind!r}, not {self.entry.name!r}")
        try:
            config.model_validate({"no_such_option": 1})
        except ValidationError:
            pass
        else:
            raise _CheckError(
                f"{config.__name__} accepts unknown options; derive it from StrategyConfig "
                "(extra='forbid') so a typo in an option is an error"
            )
        return ""

    # -- fitting -------------------------------------------------------------------
    def _fit_once(self, workdir: Path) -> tuple[Any, CostCard]:
        from frugalml.costs import CostMeter

        workdir.mkdir(parents=True)
        strategy = self.entry.build(**self.options)
        self.config = strategy.config.model_dump(mode="json")
        with CostMeter() as meter:
            predictor = strategy.fit(
                self.train, self.val, budget=self.budget, meter=meter, workdir=workdir
            )
        return predictor, meter.card

    def _fit(self, workdir: Path) -> str:
        start = time.perf_counter()
        predictor, card = self._fit_once(workdir)
        wall = time.perf_counter() - start
        self.predictor, self.report.fit_card = predictor, card
        cap = self.budget.max_wall_s
        if cap is not None and wall > 1.25 * cap:
            raise _CheckError(
                f"took {wall:.1f} s with a {cap:g} s budget; a rung must stop near the deadline "
                "it is given (Budget.max_wall_s)"
            )
        return f"{wall:.1f} s on {len(self.train)} + {len(self.val)} examples"

    def _deterministic(self, workdir: Path) -> str:
        texts = list(self.test.inputs)
        again, _ = self._fit_once(workdir)
        first, second = self.predictor.predict_proba(texts), again.predict_proba(texts)
        diff = _max_diff(first, second)
        self.report.determinism_max_diff = diff
        if diff > self.tolerance:
            raise _CheckError(
                f"two fits with the same options and seed differ by up to {diff:.2g} in "
                f"probability (tolerance {self.tolerance:g}); seed every random source from "
                "the config, or pass deterministic=False and say why in the rung's docs"
            )
        return f"max difference {diff:.2g}"

    # -- the fitted predictor --------------------------------------------------------
    def _predictor(self) -> str:
        from frugalml.strategies.base import Predictor

        if not isinstance(self.predictor, Predictor):
            missing = [
                m
                for m in ("labels", "temperature", "logits", "predict_proba", "save", "load")
                if not hasattr(self.predictor, m)
            ]
            raise _CheckError(
                f"fit returned a {type(self.predictor).__name__}, not a Predictor "
                f"(missing: {', '.join(missing)})"
            )
        expected = self.entry.predictor
        if not isinstance(self.predictor, expected):
            raise _CheckError(
                f"fit returned a {type(self.predictor).__name__} but the rung registered "
                f"predictor={expected.__name__}, whose load() reads its bundles"
            )
        return type(self.predictor).__name__

    def _labels(self) -> str:
        labels = self.predictor.labels
        if tuple(labels) != self.train.labels or not isinstance(labels, tuple):
            raise _CheckError(
                f"predictor.labels is {labels!r}, not the training data's {self.train.labels!r} "
                "(a tuple, in the same order: column i of predict_proba is labels[i])"
            )
        return ""

    def _predict_proba(self) -> str:
        _check_proba(self.predictor.predict_proba(list(self.test.inputs)), len(self.test), self.k)
        return ""

    def _logits(self) -> str:
        from frugalml.models.heads import softmax

        texts = list(self.test.inputs)
        logits = np.asarray(self.predictor.logits(texts))
        _check_shape("logits", logits, len(texts), self.k)
        if not np.isfinite(logits).all():
            raise _CheckError(f"{int((~np.isfinite(logits)).sum())} logits are not finite")
        expected = softmax(logits / self.predictor.temperature)
        diff = _max_diff(self.predictor.predict_proba(texts), expected)
        if diff > self.tolerance:
            raise _CheckError(
                f"predict_proba differs from softmax(logits / temperature) by {diff:.2g}; "
                "calibration and serving assume it is exactly that"
            )
        return ""

    def _learns(self) -> str:
        if len(self.test) == 0 or len(np.unique(self.test.y)) < 2:
            return "no labeled held-out texts to score"
        proba = self.predictor.predict_proba(list(self.test.inputs))
        if self.k == 2:  # twice chance is perfection: ask for a ranking better than chance
            return _binary_learns(proba[:, 1], self.test.y)
        pred = proba.argmax(1)
        accuracy = float((pred == self.test.y).mean())
        chance = 1 / self.k
        if accuracy <= 2 * chance:
            raise _CheckError(
                f"held-out accuracy {accuracy:.3f} is not above twice chance ({2 * chance:.3f}) "
                f"on {len(self.test)} texts: the rung learned little or predicts a shuffled "
                "label order"
            )
        return f"held-out accuracy {accuracy:.3f} (chance {chance:.3f})"

    def _empty_input(self) -> str:
        _check_empty(self.predictor, self.k)
        return ""

    def _odd_texts(self) -> str:
        odd = self.odd_inputs()
        _check_proba(self.predictor.predict_proba(odd), len(odd), self.k)
        return ""

    def _batch_invariance(self) -> str:
        texts = self.invariance_texts()
        batch = self.predictor.predict_proba(texts)
        alone = np.concatenate([self.predictor.predict_proba([t]) for t in texts])
        rng = np.random.default_rng(0)
        subsets = [rng.permutation(len(texts))[: len(texts) // 2], np.arange(len(texts))[::-3]]
        diffs = [(_max_diff(batch, alone), "each text alone", np.arange(len(texts)))]
        for idx in subsets:
            part = self.predictor.predict_proba([texts[i] for i in idx])
            diffs.append((_max_diff(batch[idx], part), f"a subset of {len(idx)}", idx))
        worst = max(d for d, _, _ in diffs)
        self.report.batch_max_diff = worst
        broken = [(d, how) for d, how, _ in diffs if d > self.tolerance]
        if broken:
            row = int(np.abs(batch - alone).max(axis=1).argmax())
            raise _CheckError(
                f"predictions depend on the batch: predicting {broken[0][1]} moves a "
                f"probability by up to {broken[0][0]:.2g} (tolerance {self.tolerance:g}; "
                f"e.g. input {row}: {str(texts[row])[:40]!r}). The server micro-batches requests "
                "from different clients; look for padding or batch statistics leaking into "
                "the result"
            )
        return f"max difference {worst:.2g} over {len(texts)} texts"

    def _capabilities(self) -> str:
        """What a predictor says it can do, it does: reported validation logits are its
        logits on the validation texts; sentence vectors are unit rows, one per text, each
        the same alone as in a batch."""
        from frugalml.strategies.base import Embedder, FitReport, OnnxExportable

        p, found = self.predictor, self.report.capabilities
        if isinstance(p, FitReport):
            found.append("FitReport")
            if p.stopped not in ("", "deadline"):
                raise _CheckError(f"stopped is {p.stopped!r}, not '' or 'deadline'")
            if p.val_logits is not None:
                found.append("val_logits")
                diff = _max_diff(p.val_logits, p.logits(list(self.val.inputs)))
                if diff > 1e-5:  # computed while fitting, in other batches: float rounding
                    raise _CheckError(
                        f"val_logits differ from logits(val texts) by {diff:.2g} (> 1e-5); "
                        "temperature scaling is fitted on them"
                    )
        if isinstance(p, OnnxExportable):
            found.append("OnnxExportable")
            if not p.onnx_precisions or not set(p.onnx_precisions) <= {"fp32", "int8"}:
                raise _CheckError(f"onnx_precisions is {p.onnx_precisions!r}")
        if isinstance(p, Embedder):
            found.append("Embedder")
            _check_embeddings(p, self.invariance_texts(), self.tolerance)
        return ", ".join(found) or "none beyond Predictor"

    def invariance_texts(self) -> list[str]:
        """Held-out texts of varied length, a few odd ones among them (padding differs)."""
        odd = self.odd_inputs()
        if self.test.records is not None:
            rows = list(self.test.inputs)[:40]
            return [*rows[:20], *odd, *rows[20:]]
        texts = list(dict.fromkeys(self.test.texts))[:40]
        return [*texts[:20], *odd[:4], odd[-1], *texts[20:]]

    def odd_inputs(self) -> list[Any]:
        """ODD_TEXTS, or for tabular rungs records that have broken encoders: every field
        missing, unseen categories, huge numbers, empty and long texts."""
        if self.train.records is None:
            return list(ODD_TEXTS)
        from frugalml.data.tabular import rows_of

        return _odd_records(rows_of(self.train).schema)

    # -- the bundle ------------------------------------------------------------------
    def _roundtrip(self, folder: Path) -> str:
        from frugalml.bundle import load, save_bundle
        from frugalml.strategies.base import Embedder

        self.bundle = save_bundle(
            folder,
            self.predictor,
            strategy=self.entry.name,
            config=self.config,
            task=self.train.task,
            data_fingerprint=self.train.fingerprint(),
        )
        self.reloaded = load(folder)
        texts = [*self.test.inputs, *self.odd_inputs()]
        before, after = self.predictor.predict_proba(texts), self.reloaded.predict_proba(texts)
        problems = []
        if self.reloaded.labels != self.predictor.labels:
            problems.append(f"labels {self.reloaded.labels!r} after loading")
        loaded_t = self.reloaded.predictor.temperature
        if loaded_t != self.predictor.temperature:
            problems.append(
                f"temperature {loaded_t} after loading, {self.predictor.temperature} before"
            )
        if not np.array_equal(before, after):
            problems.append(
                f"probabilities differ by up to {_max_diff(before, after):.2g} after loading; "
                "compute predictions the same way before and after saving"
            )
        if isinstance(self.predictor, Embedder):
            if not isinstance(self.reloaded.predictor, Embedder):
                problems.append("the fitted predictor can embed() and the loaded one cannot")
            elif not np.array_equal(
                self.predictor.embed(texts), self.reloaded.predictor.embed(texts)
            ):
                problems.append("embed() differs after loading")
        if problems:
            raise _CheckError("; ".join(problems))
        return f"{sum(1 for p in folder.rglob('*') if p.is_file())} files"

    def _no_pickles(self, folder: Path) -> str:
        """What the predictor itself writes, scanned by content: the bundle writer refuses
        pickle files too, but a rung must not depend on that to be caught."""
        assert self.predictor is not None
        folder.mkdir(parents=True)
        self.predictor.save(folder)
        found = [str(p.relative_to(folder)) for p in _pickles(folder)]
        if found:
            raise _CheckError(
                f"the bundle holds pickled data: {', '.join(found)}; save weights as "
                "safetensors and settings as JSON (a pickle runs code when loaded)"
            )
        return ""

    def _bundle_edge_inputs(self) -> str:
        _check_empty(self.reloaded.predictor, self.k)
        odd = self.odd_inputs()
        _check_proba(self.reloaded.predict_proba(odd), len(odd), self.k)
        return ""

    @property
    def k(self) -> int:
        return len(self.train.labels)


def _binary_learns(score: np.ndarray, y: np.ndarray) -> str:
    from frugalml.data.tabular import single_column_auc

    pos, neg = score[y == 1], score[y == 0]
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    if auc < 0.6:
        raise _CheckError(
            f"held-out AUC {auc:.3f} is below 0.6 on {len(y)} examples (either direction: "
            f"{single_column_auc(score, y):.3f}): the rung learned little or swapped the labels"
        )
    return f"held-out AUC {auc:.3f}"


def _odd_records(schema: Any) -> list[dict[str, Any]]:
    odd: dict[str, tuple[Any, ...]] = {
        "numeric": (None, 1e12, -1e12, 0),
        "boolean": (None, True, "no", 0),
        "date": (None, "1900-01-01", "2100-12-31", "not a date"),
        "categorical": (None, "never seen", "", 7),
        "text": (None, "", ODD_TEXTS[4], ODD_TEXTS[-1]),
    }
    return [{c.name: odd[c.type][i] for c in schema.columns} for i in range(4)]


def _check_shape(what: str, array: np.ndarray, n: int, k: int) -> None:
    if array.shape != (n, k):
        raise _CheckError(f"{what} of {n} texts has shape {array.shape}, not ({n}, {k})")


def _check_proba(proba: Any, n: int, k: int) -> None:
    proba = np.asarray(proba)
    _check_shape("predict_proba", proba, n, k)
    if not np.isfinite(proba).all():
        raise _CheckError(f"{int((~np.isfinite(proba)).sum())} probabilities are not finite")
    if (proba < 0).any():
        raise _CheckError(f"a probability is negative ({proba.min():.3g})")
    sums = proba.sum(axis=1)
    if n and not np.allclose(sums, 1.0, rtol=1e-5, atol=1e-6):
        raise _CheckError(f"rows sum to between {sums.min():.6f} and {sums.max():.6f}, not 1")


def _check_empty(predictor: Predictor, k: int) -> None:
    for what, fn in (("predict_proba", predictor.predict_proba), ("logits", predictor.logits)):
        shape = np.asarray(fn([])).shape
        if shape != (0, k):
            raise _CheckError(f"{what}([]) has shape {shape}, not (0, {k})")


def _check_embeddings(embedder: Any, texts: list[str], tolerance: float) -> None:
    vectors = np.asarray(embedder.embed(texts))
    if vectors.ndim != 2 or len(vectors) != len(texts) or vectors.dtype != np.float32:
        raise _CheckError(
            f"embed() of {len(texts)} texts gave {vectors.dtype} {vectors.shape}, "
            f"not float32 ({len(texts)}, dim)"
        )
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, rtol=1e-5):
        raise _CheckError(f"embed() rows have norms {norms.min():.6f}..{norms.max():.6f}, not 1")
    alone = np.concatenate([embedder.embed([t]) for t in texts])
    diff = _max_diff(vectors, alone)
    if diff > tolerance:
        raise _CheckError(f"embed() of each text alone differs from the batch by {diff:.2g}")
    empty = np.asarray(embedder.embed([])).shape
    if empty != (0, vectors.shape[1]):
        raise _CheckError(f"embed([]) has shape {empty}, not (0, {vectors.shape[1]})")


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise _CheckError(f"shapes differ: {a.shape} and {b.shape}")
    return float(np.abs(a - b).max()) if a.size else 0.0


_PICKLE_PROTOCOLS = {bytes([0x80, p]) for p in range(2, 6)}


def _pickles(folder: Path) -> Iterator[Path]:
    """Files that are pickles or hold one (a torch.save zip): by content, whatever their name."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            head = handle.read(4)
        if head[:2] in _PICKLE_PROTOCOLS and _parses_as_pickle(path):
            yield path
        elif head == b"PK\x03\x04" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(n.endswith((".pkl", ".pickle")) for n in archive.namelist()):
                    yield path
        elif path.suffix in {".pkl", ".pickle", ".joblib", ".pt", ".pth"}:
            yield path


def _parses_as_pickle(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            for _ in pickletools.genops(handle):
                pass
    except Exception:  # any parse error: binary data that merely starts like a pickle
        return False
    return True
