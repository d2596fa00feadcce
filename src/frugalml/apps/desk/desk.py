"""A built desk: routes each question to a template answer, the knowledge base, or a person.

The folder `build` writes:

    DESK/
      app.json             {"app": "desk", "bundle": "intent", files' sha256, digest}
      desk.json            answers, detector and thresholds, knowledge entries, the report
      arrays.safetensors   the detector's arrays and the knowledge entries' vectors
      intent/              the intent model: a frugalml bundle (its own checksummed manifest)
      report/              the ladder's report (json, md, html) for the intent model

Loading verifies app.json's digest and every file's sha256, then loads the bundle (which
verifies itself): JSON and safetensors only, nothing that can run code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import frugalml
from frugalml.apps.desk.knowledge import Hit, KnowledgeIndex
from frugalml.apps.desk.oos import Detector, Signals, restore
from frugalml.errors import BundleError, ConfigError

APP = "desk"
SCHEMA = 1
APP_FILE = "app.json"
SETTINGS = "desk.json"
ARRAYS = "arrays.safetensors"
BUNDLE = "intent"
Route = Literal["answer", "knowledge", "handoff"]
ROUTES: tuple[Route, ...] = ("answer", "knowledge", "handoff")


@dataclass(frozen=True)
class Thresholds:
    """When the desk answers by itself; every one can be overridden at ask time."""

    oos: float  # out-of-scope score at or above which the intent is not trusted
    confidence: float  # calibrated confidence needed to answer from a template
    answerable: float  # similarity to the best knowledge entry needed to answer from it

    def replace(self, **overrides: float | None) -> Thresholds:
        given = {k: v for k, v in overrides.items() if v is not None}
        problems = [
            f"the '{k}' threshold must be between 0 and 1; got {v}"
            for k, v in given.items()
            if k != "oos" and not 0.0 <= v <= 1.0
        ]
        if problems:
            raise ConfigError("thresholds out of range:", problems)
        return Thresholds(**{**vars(self), **given})


@dataclass
class Reply:
    """What the desk does with one question, and the evidence a person sees on hand-off."""

    text: str
    route: Route
    intent: str
    confidence: float
    oos_score: float
    out_of_scope: bool
    answer: str | None
    evidence: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _seal(app: dict[str, Any]) -> str:
    body = {k: v for k, v in app.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_app_file(folder: Path, **fields: Any) -> None:
    """app.json: the application's name, its bundle, and the sha256 of every other file."""
    app = {
        "app": APP,
        "schema": SCHEMA,
        "bundle": BUNDLE,
        "frugalml_version": frugalml.__version__,
        "files": {name: file_digest(folder / name) for name in (SETTINGS, ARRAYS)},
        **fields,
    }
    app["digest"] = _seal(app)
    (folder / APP_FILE).write_text(json.dumps(app, indent=2) + "\n", encoding="utf-8")


def verify_folder(folder: Path) -> dict[str, Any]:
    """app.json, once its digest and every listed file's sha256 match."""
    path = folder / APP_FILE
    if not path.is_file():
        raise BundleError(f"{folder} is not a desk folder: {APP_FILE} is missing")
    try:
        app = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise BundleError(f"{path} is not valid JSON ({err}); the desk is damaged") from None
    if not isinstance(app, dict) or app.get("app") != APP:
        raise BundleError(f"{path} does not describe a desk (its 'app' is not 'desk')")
    if app.get("schema") != SCHEMA:
        raise BundleError(f"{path}: unknown desk schema {app.get('schema')!r}; upgrade frugalml")
    problems = [] if app.get("digest") == _seal(app) else [f"{APP_FILE} was edited"]
    for name, expected in dict(app.get("files", {})).items():
        file = folder / name
        if not file.is_file() or file.is_symlink():
            problems.append(f"{name} is missing")
        elif file_digest(file) != expected:
            problems.append(f"{name} changed (sha256 differs)")
    if problems:
        raise BundleError(f"{folder}: refused to load the desk:", [*problems, "re-build it"])
    return app


class Desk:
    """A loaded desk. `ask` routes questions; the parts are public for the server and reports."""

    def __init__(
        self,
        folder: Path,
        bundle: frugalml.Bundle | None,
        settings: dict[str, Any],
        arrays: dict[str, np.ndarray],
    ) -> None:
        self.folder = folder
        self.bundle = bundle
        self.settings = settings
        self.answers: dict[str, str | None] = settings["answers"]
        d = settings["detector"]
        prefix = "detector."
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        self.detector: Detector = restore(d["name"], d["settings"], own)
        t = settings["thresholds"]
        self.thresholds = Thresholds(t["oos"], t["confidence"], t["answerable"])
        k = settings["knowledge"]
        self.index = KnowledgeIndex.restore(
            k["entries"],
            arrays["knowledge.vectors"],
            float(k["dense_weight"]),
            arrays.get("knowledge.hnsw"),  # absent: exact search, or a desk from before graphs
        )

    @classmethod
    def open(cls, path: str | Path) -> Desk:
        """The desk's settings and arrays, verified, without its model: for a server, whose
        batcher runs the model it serves (and reloads)."""
        from safetensors.numpy import load_file

        folder = Path(path)
        verify_folder(folder)
        settings = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
        return cls(folder, None, settings, load_file(str(folder / ARRAYS)))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.settings["labels"])

    @property
    def report(self) -> dict[str, Any]:
        return dict(self.settings.get("report", {}))

    def signals(self, texts: Sequence[str]) -> Signals:
        """One encoder pass: logits, calibrated probabilities and sentence vectors."""
        if self.bundle is None:
            raise ValueError("this desk was opened without its model; use `load`")
        logits, vectors = self.bundle.logits_and_embed(texts)
        return signals_from(logits, vectors, self.bundle.temperature)

    def ask(
        self,
        texts: Sequence[str],
        *,
        k: int = 3,
        oos: float | None = None,
        confidence: float | None = None,
        answerable: float | None = None,
    ) -> list[Reply]:
        """Route each question; thresholds given here override the desk's for this call."""
        thresholds = self.thresholds.replace(oos=oos, confidence=confidence, answerable=answerable)
        return self.route(texts, self.signals(list(texts)), thresholds, k=k)

    def route(
        self, texts: Sequence[str], signals: Signals, thresholds: Thresholds, *, k: int = 3
    ) -> list[Reply]:
        """Routing once the model has spoken (the server computes `signals` in a batch)."""
        scores = self.detector.score(signals)
        hits = self.index.search(texts, signals.vectors, k=k)
        return self.replies(texts, signals.proba, scores, hits, thresholds)

    def replies(
        self,
        texts: Sequence[str],
        proba: np.ndarray,
        oos_scores: np.ndarray,
        hits: Sequence[list[Hit]],
        thresholds: Thresholds,
    ) -> list[Reply]:
        """The replies once every number is known: cheap, no array work (a server computes
        the scores and hits in its batched operation)."""
        return [
            self._reply(text, proba[i], float(oos_scores[i]), hits[i], thresholds)
            for i, text in enumerate(texts)
        ]

    def _reply(
        self, text: str, proba: np.ndarray, score: float, hits: list[Hit], t: Thresholds
    ) -> Reply:
        top = int(proba.argmax())
        intent, confidence = self.labels[top], float(proba[top])
        out_of_scope = score >= t.oos
        template = self.answers.get(intent)
        route: Route = "handoff"
        answer: str | None = None
        if out_of_scope:
            reason = "out of scope"
        elif confidence < t.confidence:
            reason = "intent not certain enough"
        elif template is None:
            reason = f"'{intent}' is answered by a person"
        else:
            route, answer, reason = "answer", template, ""
        if route == "handoff" and hits and hits[0].similarity >= t.answerable:
            route, answer = "knowledge", self.index.entries[hits[0].entry].answer
            reason += "; a knowledge entry matches"
        elif route == "handoff":
            reason += "; no knowledge entry matches well enough"
        evidence = [self._evidence(h) for h in hits]
        return Reply(text, route, intent, confidence, score, out_of_scope, answer, evidence, reason)

    def _evidence(self, hit: Hit) -> dict[str, Any]:
        entry = self.index.entries[hit.entry]
        return {
            **entry.to_dict(),
            "score": round(hit.score, 6),
            "similarity": round(hit.similarity, 4),
        }


def signals_from(logits: np.ndarray, vectors: np.ndarray, temperature: float) -> Signals:
    z = logits.astype(np.float64) / temperature
    z -= z.max(1, keepdims=True)
    proba = np.exp(z)
    proba /= proba.sum(1, keepdims=True)
    return Signals(logits, proba, vectors)


def load(path: str | Path) -> Desk:
    """Verify and load a desk folder, its intent model included."""
    desk = Desk.open(path)
    app = json.loads((desk.folder / APP_FILE).read_text(encoding="utf-8"))
    desk.bundle = frugalml.load(desk.folder / str(app["bundle"]))
    if desk.bundle.labels != desk.labels:
        raise BundleError(f"{desk.folder}: the intent model's labels differ from the desk's")
    return desk
