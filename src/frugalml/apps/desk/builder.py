"""`frugalml desk build`: the intent ladder, then what no intent classifier gives alone.

1. the intent model: `frugalml.fit` climbs the same ladder (cost cards, report, shipping);
2. out-of-scope detectors fitted on the training split and compared on validation; the one
   whose threshold meets `oos_recall` with the least in-scope loss is kept;
3. the confidence needed to answer by template, from the risk-coverage curve on validation
   (`max_handoff`, `min_auto_accuracy`);
4. the hybrid knowledge index, its dense weight and "answerable" threshold chosen on held-out
   questions with a known right entry;
5. the test split routed end to end: the desk's report.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import frugalml
from frugalml.apps.desk import desk as desks
from frugalml.apps.desk import evaluate as ev
from frugalml.apps.desk import knowledge as kn
from frugalml.apps.desk.inputs import DeskInputError, DeskInputs, Entry, read_inputs
from frugalml.apps.desk.oos import (
    MIN_PER_GROUP,
    OOS_GROUPS,
    Detector,
    Knn,
    Signals,
    choose,
    choose_held_out_groups,
    fit_detectors,
    label,
    operating_point,
)
from frugalml.config import DEFAULT_STRATEGIES, Budget
from frugalml.data import Dataset, stratified_split
from frugalml.errors import ConfigError, OutputExistsError

# The desk needs sentence vectors (distance detectors, dense retrieval): rungs with an encoder.
DESK_STRATEGIES = tuple(s for s in DEFAULT_STRATEGIES if s != "tfidf")
NO_OOS_INSCOPE_FLAG = 0.05  # without out-of-scope examples: flag the 5% least typical questions
DEFAULT_ANSWERABLE = 0.6  # cosine, when no held-out question has a known right entry


@dataclass(frozen=True)
class Goals:
    """What the desk's thresholds are chosen to meet on validation."""

    oos_recall: float = 0.90
    max_handoff: float = 0.15
    min_auto_accuracy: float | None = 0.97
    knowledge_precision: float = 0.90

    def problems(self) -> list[str]:
        problems = [
            f"--{name.replace('_', '-')} must be between 0 and 1; got {value}"
            for name, value in vars(self).items()
            if value is not None and not 0.0 < value <= 1.0 and name != "max_handoff"
        ]
        if not 0.0 <= self.max_handoff <= 1.0:
            problems.append(f"--max-handoff must be between 0 and 1; got {self.max_handoff}")
        return problems


@dataclass
class BuildResult:
    folder: Path
    report: dict[str, Any]
    fit: frugalml.FitResult
    notes: list[str] = field(default_factory=list)


def build(
    intents: str | Path | Dataset,
    *,
    answers: str | Path | dict[str, str],
    knowledge: str | Path | Sequence[Entry],
    out: str | Path,
    oos: str | Path | Sequence[str] | None = None,
    oos_label: str = "oos",
    text_col: str | None = None,
    label_col: str | None = None,
    knowledge_queries: str | Path | None = None,
    goals: Goals | None = None,
    strategies: Sequence[str] = DESK_STRATEGIES,
    metric: str = "macro_f1",
    target: float | None = None,
    budget: Budget | None = None,
    ship: str = "int8",
    max_drop: float = 1.0,
    options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    force: bool = False,
    progress: Any = None,
) -> BuildResult:
    """Build a desk folder at `out` (see the module docstring); returns its report."""
    goals = goals or Goals()
    out_of_range = goals.problems()
    if "tfidf" in strategies:
        raise ConfigError(
            "the desk needs a model with an encoder (for out-of-scope distances and dense "
            "retrieval); 'tfidf' has none",
            [f"drop it from --strategies (default: {','.join(DESK_STRATEGIES)})"],
        )
    try:
        inputs = read_inputs(
            intents,
            answers=answers,
            knowledge=knowledge,
            oos=oos,
            oos_label=oos_label,
            text_col=text_col,
            label_col=label_col,
        )
    except DeskInputError as err:  # one message with every problem, the goals' too
        problems = [*out_of_range, *err.problems]
        raise DeskInputError(
            f"the desk's inputs have {len(problems)} problems:", problems
        ) from None
    if out_of_range:
        raise ConfigError("the desk's goals are out of range:", out_of_range)
    queries = read_queries(knowledge_queries, inputs.knowledge) if knowledge_queries else None
    folder = Path(out)
    _check_out(folder, force)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    splits = stratified_split(inputs.intents, seed=seed)
    oos_parts = _split_oos(inputs.oos, seed)
    result = frugalml.fit(
        splits.train,
        val=splits.val,
        test=splits.test,
        out=staging / "run",
        strategies=strategies,
        metric=metric,
        target=target,
        budget=budget,
        ship=ship,
        max_drop=max_drop,
        options=options,
        progress=progress,
    )
    bundle = result.bundle
    notes = [*inputs.notes, *result.notes]
    sig = {name: _signals(bundle, texts) for name, texts in _texts(splits, oos_parts).items()}
    detector, oos_report = _choose_detector(bundle, splits, sig, goals, notes)
    oos_threshold = oos_report["chosen"]["threshold"]
    confidence, rc_report = _confidence(sig["val"], splits.val.y, detector, oos_threshold, goals)
    if rc_report["operating_point"]["note"]:
        notes.append(rc_report["operating_point"]["note"])
    index, k_report = _knowledge(bundle, inputs, splits.val, sig["val"], queries, goals, notes)
    thresholds = desks.Thresholds(oos_threshold, confidence, k_report["answerable"])
    settings = {
        "labels": list(bundle.labels),
        "answers": inputs.answers,
        "oos_label": oos_label,
        "detector": {
            "name": detector.name,
            "label": label(detector),
            "settings": detector.settings(),
        },
        "thresholds": vars(thresholds),
        "goals": vars(goals),
        "knowledge": {
            "entries": index.save_entries(),
            "dense_weight": index.dense_weight,
        },
    }
    arrays = {f"detector.{k}": v for k, v in detector.arrays().items()}
    arrays.update({f"knowledge.{k}": v for k, v in index.arrays().items()})
    desk = desks.Desk(staging, bundle, settings, arrays)
    test = _test_report(desk, splits.test, oos_parts["test"], oos_label)
    report = {
        "intent_model": {
            "strategy": bundle.manifest.strategy,
            "ladder": result.ladder.reason,
            "n_train": len(splits.train),
            "n_val": len(splits.val),
            "n_test": len(splits.test),
            "n_oos": {k: len(v) for k, v in oos_parts.items()},
        },
        "oos": oos_report,
        "risk_coverage": rc_report,
        "knowledge": k_report,
        "test": test,
        "notes": notes,
    }
    settings["report"] = report
    _write(staging, result, settings, arrays)
    if folder.exists():
        shutil.rmtree(folder)
    staging.replace(folder)
    return BuildResult(folder, report, result, notes)


def _check_out(folder: Path, force: bool) -> None:
    if not folder.exists():
        return
    if not force:
        raise OutputExistsError(f"{folder} already exists", ["pass --force to replace a desk"])
    if not (folder / desks.APP_FILE).is_file():
        raise OutputExistsError(
            f"{folder} exists and is not a desk folder; --force replaces desk folders only",
            ["choose another --out"],
        )


def _split_oos(texts: Sequence[str], seed: int) -> dict[str, list[str]]:
    """Out-of-scope examples: 40% train the oos class, 30% choose thresholds, 30% test."""
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    if len(shuffled) < 6:  # too few to split: all of them choose the threshold
        return {"train": [], "val": shuffled, "test": []}
    a, b = int(0.4 * len(shuffled)), int(0.7 * len(shuffled))
    return {"train": shuffled[:a], "val": shuffled[a:b], "test": shuffled[b:]}


def _texts(splits: Any, oos: dict[str, list[str]]) -> dict[str, list[str]]:
    return {
        "train": list(splits.train.texts),
        "val": list(splits.val.texts),
        "oos_train": oos["train"],
        "oos_val": oos["val"],
    }


def _signals(bundle: frugalml.Bundle, texts: Sequence[str]) -> Any:
    if not texts:
        return None
    logits, vectors = bundle.logits_and_embed(list(texts))
    return desks.signals_from(logits, vectors, bundle.temperature)


def _choose_detector(
    bundle: frugalml.Bundle,
    splits: Any,
    sig: dict[str, Any],
    goals: Goals,
    notes: list[str],
) -> tuple[Detector, dict[str, Any]]:
    train, val = sig["train"], sig["val"]
    oos_train = sig["oos_train"].vectors if sig["oos_train"] is not None else None
    detectors = fit_detectors(
        train, splits.train.y, len(bundle.labels), oos_train=oos_train, temperature=1.0
    )
    correct = val.proba.argmax(1) == splits.val.y
    if sig["oos_val"] is None:
        chosen = next(d for d in detectors if isinstance(d, Knn))
        scores = chosen.score(val)
        threshold = float(np.quantile(scores, 1 - NO_OOS_INSCOPE_FLAG))
        notes.append(
            "no out-of-scope examples: detectors cannot be compared; kept "
            f"{label(chosen)} flagging the {NO_OOS_INSCOPE_FLAG:.0%} least typical "
            "validation questions (give --oos FILE to choose on real ones)"
        )
        flagged = scores >= threshold
        fallback = {
            "detector": label(chosen),
            "threshold": threshold,
            "inscope_flagged": float(flagged.mean()),
            "inscope_loss": float((flagged & correct).mean()),
        }
        return chosen, {"chosen": fallback, "compared": [], "oos_recall_goal": goals.oos_recall}
    examples = _joined(sig["oos_train"], sig["oos_val"])
    if len(examples.vectors) >= OOS_GROUPS * MIN_PER_GROUP:
        detector, point, table = choose_held_out_groups(
            train, splits.train.y, len(bundle.labels), val, correct, examples, goals.oos_recall
        )
        chosen_on = f"out-of-scope examples in {OOS_GROUPS} k-means groups, each held out once"
    else:
        detector, point, table = choose(detectors, val, sig["oos_val"], correct, goals.oos_recall)
        chosen_on = "out-of-scope examples of the kinds the detectors were fitted on"
        notes.append(
            f"fewer than {OOS_GROUPS * MIN_PER_GROUP} out-of-scope examples: the detector is "
            "chosen on kinds of question it was fitted on, and may miss new kinds"
        )
    curve = _tradeoff(detector.score(val), detector.score(sig["oos_val"]), correct)
    return detector, {
        "chosen": point.to_dict(),
        "chosen_on": chosen_on,
        "compared": [c.to_dict() for c in table],
        "oos_recall_goal": goals.oos_recall,
        "tradeoff": curve,
    }


def _joined(a: Signals | None, b: Signals) -> Signals:
    """The out-of-scope examples' signals, fitting and validation parts together."""
    if a is None:
        return b
    return Signals(
        *(np.vstack([x, y]) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    )


def _tradeoff(inscope: np.ndarray, oos: np.ndarray, correct: np.ndarray) -> list[dict[str, float]]:
    """OOS recall against in-scope loss, for recall goals 0.50 … 1.00 (the whole curve)."""
    return [
        {
            "oos_recall_goal": r,
            **{
                k: v
                for k, v in operating_point("", inscope, oos, correct, r).to_dict().items()
                if k in ("threshold", "oos_recall", "inscope_loss", "inscope_flagged")
            },
        }
        for r in np.round(np.arange(0.5, 1.0001, 0.05), 2).tolist()
    ]


def _confidence(
    val: Any, y: np.ndarray, detector: Detector, oos_threshold: float, goals: Goals
) -> tuple[float, dict[str, Any]]:
    confidence = val.proba.max(1)
    correct = val.proba.argmax(1) == y
    blocked = detector.score(val) >= oos_threshold
    curve = ev.risk_coverage(confidence, correct, blocked)
    point = ev.pick_operating_point(
        curve,
        max_handoff=goals.max_handoff,
        min_auto_accuracy=goals.min_auto_accuracy,
        n=len(y),
    )
    return point.threshold, {
        "operating_point": point.to_dict(),
        "curve": ev.thin(curve),
        "max_handoff": goals.max_handoff,
        "min_auto_accuracy": goals.min_auto_accuracy,
    }


def read_queries(source: str | Path, entries: Sequence[Entry]) -> tuple[list[str], np.ndarray]:
    """A table of (query, expected entry): the expected entry named by its question, title
    or URL; returns the queries and their relevance over `entries`."""
    from frugalml.data import read_table
    from frugalml.errors import DataError

    table = read_table(source)
    frame = table.frame
    columns = {str(c).lower(): c for c in frame.columns}
    if "query" not in columns or "expected" not in columns:
        raise DataError(
            f"{source}: knowledge queries need the columns 'query' and 'expected' "
            f"(found {', '.join(map(str, frame.columns))})",
            ["'expected' names the right entry by its question, title or URL"],
        )
    keys: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        for key in {e.question, e.title, e.url} - {""}:
            keys.setdefault(key.strip().lower(), []).append(i)
    queries, rows, problems = [], [], []
    for row in range(len(frame)):
        query = str(frame[columns["query"]].iloc[row]).strip()
        expected = str(frame[columns["expected"]].iloc[row]).strip().lower()
        if expected not in keys:
            problems.append(
                f"{table.where(row)}: no entry has the question, title or URL {expected!r}"
            )
            continue
        relevant = np.zeros(len(entries), bool)
        relevant[keys[expected]] = True
        queries.append(query)
        rows.append(relevant)
    if problems:
        raise DataError(f"{source}: {len(problems)} queries name no entry", problems[:10])
    return queries, np.array(rows)


def _knowledge(
    bundle: frugalml.Bundle,
    inputs: DeskInputs,
    val: Dataset,
    val_sig: Any,
    queries: tuple[list[str], np.ndarray] | None,
    goals: Goals,
    notes: list[str],
) -> tuple[kn.KnowledgeIndex, dict[str, Any]]:
    vectors = bundle.embed([kn.entry_text(e) for e in inputs.knowledge])
    index = kn.KnowledgeIndex(inputs.knowledge, vectors)
    held = _held_out_queries(inputs.knowledge, val, val_sig, queries)
    if held is None:
        notes.append(
            "the knowledge index's weight and answerable threshold are defaults: no held-out "
            "question has a known right entry (give the knowledge an 'intent' column, or "
            "--knowledge-queries FILE)"
        )
        return index, {"dense_weight": 0.5, "answerable": DEFAULT_ANSWERABLE, "chosen_on": None}
    texts, qvectors, relevant = held
    qvectors = bundle.embed(texts) if qvectors is None else qvectors
    weight, table = kn.choose_weight(index, texts, qvectors, relevant)
    index.dense_weight = weight
    fused = index.ranked(texts, qvectors, weight)
    top = fused.argmax(1)
    sims = index.similarities(qvectors)[np.arange(len(top)), top]
    correct = relevant[np.arange(len(top)), top]
    answerable = kn.answerable_threshold(sims, correct, goals.knowledge_precision)
    if answerable is None:
        answerable = 1.0
        notes.append(
            f"no similarity threshold makes knowledge answers {goals.knowledge_precision:.0%} "
            "right on held-out questions: the desk never answers from the knowledge base "
            "(lower --knowledge-precision or add entries)"
        )
    return index, {
        "dense_weight": weight,
        "answerable": answerable,
        "chosen_on": len(texts),
        "by_weight": table,
        "bm25": table["0.0"],
        "dense": table["1.0"],
        "hybrid": table[str(weight)],
    }


def _held_out_queries(
    entries: Sequence[Entry],
    val: Dataset,
    val_sig: Any,
    queries: tuple[list[str], np.ndarray] | None,
) -> tuple[list[str], np.ndarray | None, np.ndarray] | None:
    """Questions with known right entries: --knowledge-queries, else the validation questions
    of intents the knowledge base's 'intent' column names."""
    if queries is not None:
        return queries[0], None, queries[1]
    intents = np.array([e.intent for e in entries])
    if not intents.any():
        return None
    keep = [i for i, y in enumerate(val.y) if val.labels[int(y)] in set(intents)]
    if not keep:
        return None
    relevant = np.array([intents == val.labels[int(val.y[i])] for i in keep])
    return [val.texts[i] for i in keep], val_sig.vectors[keep], relevant


def _test_report(
    desk: desks.Desk, test: Dataset, oos_test: list[str], oos_label: str
) -> dict[str, Any]:
    texts = list(test.texts) + oos_test
    truth = [test.labels[int(y)] for y in test.y] + [oos_label] * len(oos_test)
    replies = desk.route(texts, desk.signals(texts), desk.thresholds)
    outcome = ev.outcome_of(replies, truth, oos_label)
    return {
        "n": len(texts),
        "n_oos": len(oos_test),
        "metrics": ev.with_intervals(outcome),
        "routing": ev.routing_matrix(outcome),
    }


def _write(
    staging: Path, result: frugalml.FitResult, settings: dict[str, Any], arrays: dict[str, Any]
) -> None:
    from safetensors.numpy import save_file

    run = staging / "run"
    (run / "bundle").replace(staging / desks.BUNDLE)
    (staging / "report").mkdir()
    for path in (result.report_json, result.report_md, result.report_html):
        shutil.copy2(path, staging / "report" / path.name)
    shutil.rmtree(run)
    (staging / desks.SETTINGS).write_text(
        json.dumps(settings, indent=1, default=_json_default) + "\n", encoding="utf-8"
    )
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(staging / desks.ARRAYS))
    desks.write_app_file(staging)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
