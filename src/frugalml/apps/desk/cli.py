"""`frugalml desk ...`: build, ask, evaluate, demo. Parses options and prints; the work is in
the desk's Python API. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="A customer-service desk: intents, out-of-scope detection, answers from templates "
    "and a knowledge base, hand-off to a person.",
)

OosRecall = Annotated[
    float,
    typer.Option(help="Out-of-scope recall the detector's threshold must reach on validation."),
]
MaxHandoff = Annotated[
    float, typer.Option(help="Most in-scope questions handed to a person (0-1).")
]
MinAutoAccuracy = Annotated[
    float,
    typer.Option(help="Accuracy wanted on the questions answered by template (0-1)."),
]
KnowledgePrecision = Annotated[
    float,
    typer.Option(help="How often a knowledge answer must be right on held-out questions."),
]


def _progress(event: str, info: dict[str, Any]) -> None:
    """One line per ladder event on stderr, as it happens."""
    name = info.get("strategy", "ship")
    if event == "done":
        candidate = info["candidate"]
        line = f"{name}: done in {candidate.cost.wall_s:.1f} s"
    elif event == "skipped":
        line = f"{name}: skipped ({info['reason']})"
    else:
        line = f"{name}: {event}"
    sys.stderr.write(f"  {line}\n")
    sys.stderr.flush()


@app.command()
def build(
    intents: Annotated[Path, typer.Argument(help="text,label table of customer questions.")],
    answers: Annotated[Path, typer.Option(help="intent,answer CSV or intent: answer YAML.")],
    knowledge: Annotated[Path, typer.Option(help="FAQ or past tickets: question, answer.")],
    out: Annotated[Path, typer.Option(help="The desk folder to create.")],
    oos: Annotated[
        Path | None, typer.Option(help="Out-of-scope example questions (a 'text' column).")
    ] = None,
    oos_label: Annotated[
        str, typer.Option(help="Rows of INTENTS with this label are out of scope.")
    ] = "oos",
    text_col: Annotated[str | None, typer.Option(help="INTENTS' text column.")] = None,
    label_col: Annotated[str | None, typer.Option(help="INTENTS' label column.")] = None,
    knowledge_queries: Annotated[
        Path | None,
        typer.Option(help="query,expected table: held-out questions and their right entry."),
    ] = None,
    oos_recall: OosRecall = 0.90,
    max_handoff: MaxHandoff = 0.15,
    min_auto_accuracy: MinAutoAccuracy = 0.97,
    knowledge_precision: KnowledgePrecision = 0.90,
    strategies: Annotated[
        str | None, typer.Option(help="Comma-separated rungs (default: all with an encoder).")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Intent quality bar, e.g. macro_f1=0.9.")
    ] = None,
    budget: Annotated[str | None, typer.Option(help="Cap for the ladder: 10m, $0.05.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Encoder: 'minilm', a folder.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Strategy setting, e.g. lora.r=16.")
    ] = None,
    ship: Annotated[str, typer.Option(help="none, onnx, int8 or distilled.")] = "int8",
    seed: Annotated[int, typer.Option(help="Seed for the splits and training.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing desk folder.")] = False,
) -> None:
    """Climb the ladder for the intents, choose the out-of-scope detector and thresholds,
    index the knowledge base, and write one desk folder."""
    from frugalml.apps.desk.builder import DESK_STRATEGIES, Goals
    from frugalml.apps.desk.builder import build as run_build
    from frugalml.config import parse_budget, parse_overrides, parse_target

    names = [s.strip() for s in (strategies or ",".join(DESK_STRATEGIES)).split(",") if s.strip()]
    metric, bar = parse_target(target) if target else ("macro_f1", None)
    options = parse_overrides(overrides or [])
    if backbone:
        for name in names:
            options.setdefault(name, {})["backbone"] = backbone
    result = run_build(
        intents,
        answers=answers,
        knowledge=knowledge,
        out=out,
        oos=oos,
        oos_label=oos_label,
        text_col=text_col,
        label_col=label_col,
        knowledge_queries=knowledge_queries,
        goals=Goals(oos_recall, max_handoff, min_auto_accuracy, knowledge_precision),
        strategies=names,
        metric=metric,
        target=bar,
        budget=parse_budget(budget) if budget else None,
        ship=ship,
        options=options,
        seed=seed,
        force=force,
        progress=_progress,
    )
    _print_report(result.folder, result.report)


def _print_report(folder: Path, report: dict[str, Any]) -> None:
    for note in report["notes"]:
        typer.echo(f"note: {note}")
    chosen = report["oos"]["chosen"]
    typer.echo(f"intent model: {report['intent_model']['strategy']}")
    line = f"out-of-scope detector: {chosen['detector']} (threshold {chosen['threshold']:.4g}"
    if "oos_recall" in chosen:
        line += f"; validation: OOS recall {chosen['oos_recall']:.3f}, AUROC {chosen['auroc']:.3f}"
    typer.echo(line + f", in-scope loss {chosen['inscope_loss']:.3f})")
    point = report["risk_coverage"]["operating_point"]
    typer.echo(
        f"answer by template at confidence ≥ {point['threshold']:.3f}: hand-off "
        f"{point['handoff']:.1%}, auto accuracy {point['auto_accuracy']:.1%} (validation)"
    )
    metrics = report["test"]["metrics"]
    shown = ("inscope_accuracy", "auto_accuracy", "oos_recall", "auroc", "handoff_rate")
    parts = [
        f"{name} {metrics[name]['value']:.3f}"
        for name in shown
        if metrics.get(name, {}).get("value") is not None
    ]
    typer.echo(f"test: {', '.join(parts)}")
    typer.echo(f"desk written to {folder}")


@app.command()
def ask(
    desk: Annotated[Path, typer.Argument(help="A desk folder.")],
    texts: Annotated[list[str], typer.Argument(help="Questions.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per question.")] = False,
    oos_threshold: Annotated[float | None, typer.Option(help="Override the OOS threshold.")] = None,
    confidence: Annotated[float | None, typer.Option(help="Override the confidence.")] = None,
    answerable: Annotated[float | None, typer.Option(help="Override the answerable one.")] = None,
    k: Annotated[int, typer.Option(help="Knowledge entries shown as evidence.")] = 3,
) -> None:
    """Route questions: an answer from a template, from the knowledge base, or a hand-off."""
    from frugalml.apps.desk.desk import load

    replies = load(desk).ask(
        texts, k=k, oos=oos_threshold, confidence=confidence, answerable=answerable
    )
    for reply in replies:
        if as_json:
            typer.echo(json.dumps(reply.to_dict(), ensure_ascii=False))
            continue
        typer.echo(f"> {reply.text}")
        typer.echo(
            f"  route: {reply.route} (intent {reply.intent}, confidence {reply.confidence:.2f}, "
            f"out-of-scope score {reply.oos_score:.3g})"
        )
        typer.echo(f"  {reply.answer if reply.answer else 'handed to a person: ' + reply.reason}")


@app.command()
def evaluate(
    desk: Annotated[Path, typer.Argument(help="A desk folder.")],
    data: Annotated[Path, typer.Argument(help="text,label table; label 'oos' = out of scope.")],
    knowledge_queries: Annotated[
        Path | None, typer.Option(help="query,expected table for Recall@1/5 and MRR.")
    ] = None,
    text_col: Annotated[str | None, typer.Option(help="DATA's text column.")] = None,
    label_col: Annotated[str | None, typer.Option(help="DATA's label column.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Routing quality with 95% bootstrap intervals; with --knowledge-queries, retrieval."""
    from frugalml.apps.desk.evaluate import evaluate_desk

    result = evaluate_desk(
        desk, data, knowledge_queries=knowledge_queries, text_col=text_col, label_col=label_col
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{result['n']} questions ({result['n_oos']} out of scope)")
    for name, value in result["metrics"].items():
        if value["value"] is not None:
            low, high = value["ci95"]
            typer.echo(f"  {name:26s} {value['value']:.3f}  ({low:.3f}-{high:.3f})")
    typer.echo("routing (rows: truth, columns: route):")
    for row, counts in result["routing"].items():
        typer.echo(f"  {row:24s} " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    for name, value in result.get("knowledge", {}).items():
        low, high = value["ci95"]
        typer.echo(f"  knowledge {name:16s} {value['value']:.3f}  ({low:.3f}-{high:.3f})")


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="The desk folder to create.")] = None,
    backbone: Annotated[str | None, typer.Option(help="Encoder: 'minilm', a folder.")] = None,
    strategies: Annotated[str, typer.Option(help="Comma-separated rungs.")] = "frozen_probe",
    ship: Annotated[str, typer.Option(help="none, onnx, int8 or distilled.")] = "none",
    force: Annotated[bool, typer.Option(help="Replace an existing desk folder.")] = False,
) -> None:
    """Build a desk on the embedded bank intents, out-of-scope texts and FAQ; route a few."""
    import tempfile

    from frugalml.apps.desk.demo import DEMO_ANSWERS, DEMO_FAQ, DEMO_QUESTIONS
    from frugalml.data import DEMO_INTENTS
    from frugalml.data.demo import DEMO_OUT_OF_SCOPE

    folder = out or Path(tempfile.mkdtemp(prefix="frugalml-desk-")) / "desk"
    build(
        DEMO_INTENTS,
        answers=DEMO_ANSWERS,
        knowledge=DEMO_FAQ,
        out=folder,
        oos=DEMO_OUT_OF_SCOPE,
        oos_label="oos",
        text_col="text",
        label_col="label",
        knowledge_queries=None,
        oos_recall=0.90,
        max_handoff=0.15,
        min_auto_accuracy=0.97,
        knowledge_precision=0.90,
        strategies=strategies,
        target=None,
        budget=None,
        backbone=backbone,
        overrides=None,
        ship=ship,
        seed=0,
        force=force,
    )
    ask(
        folder,
        list(DEMO_QUESTIONS),
        as_json=False,
        oos_threshold=None,
        confidence=None,
        answerable=None,
        k=3,
    )
