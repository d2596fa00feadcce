"""The desk on the tiny random BERT: build, ask, the folder, inputs' errors, evaluate."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frugalml.apps import desk as desk_app
from frugalml.apps.desk.builder import BuildResult, Goals
from frugalml.apps.desk.inputs import DeskInputError
from frugalml.data import DEMO_INTENTS, out_of_scope_texts
from frugalml.errors import BundleError, ConfigError


def _options(backbone: Path) -> dict[str, Any]:
    return {"frozen_probe": {"backbone": str(backbone), "cache": False}}


@pytest.fixture(scope="module")
def built(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    root = tmp_path_factory.mktemp("desk")
    return desk_app.build(
        DEMO_INTENTS,
        answers=desk_app.DEMO_ANSWERS,
        knowledge=desk_app.DEMO_FAQ,
        oos=out_of_scope_texts(),
        out=root / "desk",
        strategies=["frozen_probe"],
        options=_options(tiny_backbone),
        ship="none",
    )


def test_build_writes_one_checksummed_folder_without_pickles(built: BuildResult) -> None:
    folder = built.folder
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["app.json", "arrays.safetensors", "desk.json", "intent", "report"]
    suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors", ".md", ".html", ".txt", ".onnx"}
    app = json.loads((folder / "app.json").read_text())
    assert app["app"] == "desk" and app["bundle"] == "intent"
    report = built.report
    compared = {c["detector"] for c in report["oos"]["compared"]}
    assert {"max_prob", "energy", "knn(k=1)", "mahalanobis", "oos_class", "oos_intent"} <= compared
    chosen = report["oos"]["chosen"]
    assert chosen["oos_recall"] >= 0.9  # the goal, met on validation by construction
    assert min(c["inscope_loss"] for c in report["oos"]["compared"]) == chosen["inscope_loss"]
    assert report["test"]["n_oos"] > 0
    assert set(report["test"]["metrics"]["auroc"]) == {"value", "ci95"}


def test_ask_routes_and_gives_evidence(built: BuildResult) -> None:
    desk = desk_app.load(built.folder)
    replies = desk.ask(["my card has not arrived yet", "Where can I find my IBAN?"], k=3)
    assert all(r.route in ("answer", "knowledge", "handoff") for r in replies)
    assert all(len(r.evidence) == 3 for r in replies)
    # a random tiny encoder's vectors are noise; BM25's words still bring the entry up
    assert "Finding your IBAN" in [e["title"] for e in replies[1].evidence]
    # thresholds at ask time: nothing is out of scope / everything is
    forced = desk.ask(["my card has not arrived yet"], oos=1e9, confidence=0.0)[0]
    assert forced.route == "answer" and forced.answer == desk.answers[forced.intent]
    handed = desk.ask(["my card has not arrived yet"], oos=-1e9, answerable=1.0)[0]
    assert handed.route == "handoff" and handed.out_of_scope and handed.answer is None
    with pytest.raises(ConfigError, match="between 0 and 1"):
        desk.ask(["x"], confidence=1.5)


def test_a_changed_file_is_refused(built: BuildResult, tmp_path: Path) -> None:
    copy = tmp_path / "desk"
    shutil.copytree(built.folder, copy)
    settings = json.loads((copy / "desk.json").read_text())
    settings["thresholds"]["oos"] = 99.0
    (copy / "desk.json").write_text(json.dumps(settings))
    with pytest.raises(BundleError, match=r"desk\.json changed"):
        desk_app.load(copy)


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_every_input_problem_is_reported_at_once(tmp_path: Path) -> None:
    answers = _write(
        tmp_path / "answers.csv",
        [["intent", "answer"], ["card_not_arrived", "It comes in a week."]],
    )
    knowledge = _write(tmp_path / "faq.csv", [["title", "answer"], ["IBAN", "In the app."]])
    with pytest.raises(DeskInputError) as err:
        desk_app.build(DEMO_INTENTS, answers=answers, knowledge=knowledge, out=tmp_path / "desk")
    message = str(err.value)
    assert "13 intents without an answer" in message and "handoff" in message
    assert "no question column" in message
    assert not (tmp_path / "desk").exists()


def test_an_empty_knowledge_base_and_out_of_range_goals_are_refused(tmp_path: Path) -> None:
    knowledge = _write(tmp_path / "faq.csv", [["question", "answer"]])
    with pytest.raises(DeskInputError, match=r"knowledge base.*is empty"):
        desk_app.build(
            DEMO_INTENTS, answers=desk_app.DEMO_ANSWERS, knowledge=knowledge, out=tmp_path / "d"
        )
    with pytest.raises(ConfigError, match=r"--oos-recall must be between 0 and 1; got 1\.5"):
        desk_app.build(
            DEMO_INTENTS,
            answers=desk_app.DEMO_ANSWERS,
            knowledge=desk_app.DEMO_FAQ,
            out=tmp_path / "d",
            goals=Goals(oos_recall=1.5, max_handoff=-0.1),
        )


def test_an_intent_marked_handoff_needs_no_answer_and_is_handed_off(tmp_path: Path) -> None:
    from frugalml.apps.desk.inputs import read_inputs

    rows = [["intent", "answer"], *(list(r) for r in _demo_answers().items())]
    rows[1][1] = "handoff"
    inputs = read_inputs(
        DEMO_INTENTS, answers=_write(tmp_path / "a.csv", rows), knowledge=desk_app.DEMO_FAQ
    )
    assert inputs.answers[rows[1][0]] is None
    assert len(inputs.knowledge) == 42 and inputs.knowledge[0].url.startswith("https://")


def _demo_answers() -> dict[str, str]:
    with desk_app.DEMO_ANSWERS.open(encoding="utf-8", newline="") as handle:
        return {row["intent"]: row["answer"] for row in csv.DictReader(handle)}


def test_oos_rows_in_the_intents_are_out_of_scope_examples(tmp_path: Path) -> None:
    from frugalml.apps.desk.inputs import read_inputs

    intents = tmp_path / "intents.csv"
    shutil.copy(DEMO_INTENTS, intents)
    with intents.open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([[t, "oos"] for t in out_of_scope_texts()[:10]])
    inputs = read_inputs(intents, answers=desk_app.DEMO_ANSWERS, knowledge=desk_app.DEMO_FAQ)
    assert "oos" not in inputs.intents.labels and len(inputs.oos) == 10


def test_evaluate_scores_routing_with_intervals(built: BuildResult, tmp_path: Path) -> None:
    from frugalml.apps.desk.evaluate import evaluate_desk

    data = tmp_path / "labelled.csv"
    with DEMO_INTENTS.open(encoding="utf-8", newline="") as handle:
        intents = list(csv.reader(handle))[1:61]
    _write(data, [["text", "label"], *intents, *([t, "oos"] for t in out_of_scope_texts()[:20])])
    queries = _write(
        tmp_path / "queries.csv",
        [
            ["query", "expected"],
            ["what's my IBAN", "Finding your IBAN"],
            ["sort code?", "Sort code and account number"],
        ],
    )
    result = evaluate_desk(built.folder, data, knowledge_queries=queries)
    assert result["n"] == 80 and result["n_oos"] == 20
    metrics = result["metrics"]
    for name in (
        "inscope_accuracy",
        "oos_recall",
        "oos_precision",
        "auroc",
        "fpr@95tpr",
        "handoff_rate",
    ):
        low, high = metrics[name]["ci95"]
        assert low <= metrics[name]["value"] <= high
    routed = sum(sum(row.values()) for row in result["routing"].values())
    assert routed == 80
    assert set(result["knowledge"]) == {"recall@1", "recall@5", "mrr"}


def test_risk_coverage_picks_the_point_meeting_both_goals_or_says_why() -> None:
    from frugalml.apps.desk.evaluate import pick_operating_point, risk_coverage

    confidence = np.linspace(1.0, 0.01, 100)
    correct = np.arange(100) < 80  # the 80 most confident are right
    curve = risk_coverage(confidence, correct)
    point = pick_operating_point(curve, max_handoff=0.25, min_auto_accuracy=0.97)
    # the most answered at >= 97%: the 82 most confident (80 right), 18% handed off
    assert point.met and point.auto_accuracy == pytest.approx(80 / 82)
    assert point.handoff == pytest.approx(0.18)
    short = pick_operating_point(curve, max_handoff=0.10, min_auto_accuracy=0.97)
    assert not short.met and "needs 18% hand-off" in short.note
    assert short.handoff == pytest.approx(0.10) and short.auto_accuracy == pytest.approx(80 / 90)
    # with the sample size, the accuracy's whole interval must clear the bar and the hand-off
    # rate's whole interval stay within the limit: on 100 questions 20% hand-off may really be
    # 29%, so a 25% limit keeps at most 16% (whose estimate reaches 95%, not 97%: not met)
    small = pick_operating_point(curve, max_handoff=0.25, min_auto_accuracy=0.97, n=100)
    assert not small.met and small.handoff == pytest.approx(0.16)
    # within 30% (20% hand-off's high end is 28.9%) no point can vouch for 97% on 100
    # questions, so of those whose estimate reaches it the one most surely above the bar is
    # kept (80 of 80, not 80 of 82 at the bar), with a note
    lenient = pick_operating_point(curve, max_handoff=0.30, min_auto_accuracy=0.97, n=100)
    assert lenient.met and "point estimate" in lenient.note
    assert lenient.handoff == pytest.approx(0.20) and lenient.auto_accuracy == 1.0
    big = risk_coverage(np.linspace(1.0, 0.0, 10_000), np.arange(10_000) < 9_000)
    strict = pick_operating_point(big, max_handoff=0.25, min_auto_accuracy=0.97, n=10_000)
    assert strict.met and not strict.note and strict.auto_accuracy > 0.97
    estimate = pick_operating_point(big, max_handoff=0.25, min_auto_accuracy=0.97)
    assert strict.handoff > estimate.handoff  # fewer answered than the estimate would allow


def test_compress_refuses_a_desk_folder_and_says_how_to_ship_one(
    built: BuildResult, tmp_path: Path
) -> None:
    from frugalml.api import compress_bundle

    with pytest.raises(ConfigError, match="application folder") as err:
        compress_bundle(built.folder, out=tmp_path / "out")
    assert "--ship int8" in str(err.value)


class _Scores:
    """A knowledge index reduced to what `choose_weight` reads: fixed score matrices."""

    def __init__(self, dense: list[list[float]], lexical: list[list[float]]) -> None:
        self.dense, self.lexical = np.asarray(dense), np.asarray(lexical)

    def similarities(self, vectors: np.ndarray) -> np.ndarray:
        return self.dense

    def bm25_scores(self, queries: object) -> np.ndarray:
        return self.lexical


def test_the_fusion_weight_is_a_mix_only_when_the_mix_clearly_wins() -> None:
    from frugalml.apps.desk.knowledge import choose_weight

    relevant = np.zeros((20, 5), dtype=bool)
    relevant[:, 0] = True  # entry 0 is every query's right answer
    # half the queries: dense right, BM25 has it second behind entry 1, which dense ranks last;
    # the other half: BM25 right, dense has it second behind entry 2, which BM25 ranks last
    dense_right = ([0.9, 0.1, 0.5, 0.4, 0.3], [4.0, 5.0, 1.0, 0.5, 0.2])
    words_right = ([0.8, 0.5, 0.9, 0.4, 0.3], [5.0, 3.0, 0.1, 2.0, 1.0])
    rows = [dense_right if i % 2 else words_right for i in range(20)]
    index = _Scores([r[0] for r in rows], [r[1] for r in rows])
    weight, table = choose_weight(index, ["q"] * 20, np.zeros((20, 3)), relevant)  # type: ignore[arg-type]
    assert 0 < weight < 1  # each side alone is right half the time; the mix always
    assert table[str(weight)]["mrr"] == 1.0 and table["1.0"]["mrr"] == 0.75

    # dense alone is always right: no mix can beat it, so dense is kept
    dense_only = _Scores([dense_right[0]] * 20, [dense_right[1]] * 20)
    weight, _ = choose_weight(dense_only, ["q"] * 20, np.zeros((20, 3)), relevant)  # type: ignore[arg-type]
    assert weight == 1.0

    # BM25 alone is always right and dense never: BM25 (weight 0) is kept
    words_only = _Scores([[0.1, 0.9, 0.8, 0.7, 0.6]] * 20, [[5.0, 1.0, 0.5, 0.3, 0.2]] * 20)
    weight, _ = choose_weight(words_only, ["q"] * 20, np.zeros((20, 3)), relevant)  # type: ignore[arg-type]
    assert weight == 0.0
