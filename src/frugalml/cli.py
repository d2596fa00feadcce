"""The command line: parses options, calls the Python API, prints with rich. No logic of its own.

Both consoles print text, never markup: labels, paths, column names and messages come from the
user's data, and a label such as `[/]close` must print as itself (styles go in as `Text`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress as RichProgress
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from rich.text import Text

from frugalml import api
from frugalml import bundle as bundles
from frugalml.apps.credit import cli as credit_cli
from frugalml.apps.desk import cli as desk_cli
from frugalml.apps.monitor import cli as monitor_cli
from frugalml.apps.recommend import cli as recommend_cli
from frugalml.config import (
    DEFAULT_STRATEGIES,
    Scale,
    SplitConfig,
    parse_budget,
    parse_overrides,
    parse_target,
)
from frugalml.data import DEMO_INTENTS, read_table, texts_for_prediction
from frugalml.errors import ConfigError, FrugalError, OutputError, OutputExistsError
from frugalml.federated.cli import app as federate_app
from frugalml.ladder import tracking
from frugalml.ladder.run import Candidate, Progress
from frugalml.metrics import metric_names, score
from frugalml.strategies import get_strategy

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find the cheapest model that is good enough, prove what it cost, ship it.",
)
app.add_typer(federate_app, name="federate")  # imports only typer: --help stays fast
app.add_typer(monitor_cli.app, name="monitor")
app.add_typer(desk_cli.app, name="desk")
app.add_typer(credit_cli.app, name="credit")
# Off a terminal (pipes, CI logs) rich would wrap tables at 80 columns; leaderboards need more.
out = Console(width=None if sys.stdout.isatty() else 150, markup=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 150, markup=False)
app.add_typer(recommend_cli.app, name="recommend")

TextCol = Annotated[str | None, typer.Option("--text-col", help="Column with the text.")]
LabelCol = Annotated[str | None, typer.Option("--label-col", help="Column with the label.")]
Delimiter = Annotated[
    str | None,
    typer.Option("--delimiter", help="Field separator for .txt files such as 'sentence@label'."),
]
Ship = Annotated[
    str | None,
    typer.Option(
        help="Compress the chosen transformer model before shipping: none, onnx, int8 or "
        "distilled (each step accuracy-gated by --max-drop); auto: the accepted step cheapest "
        "to own at --volume. Default: auto with --volume, else int8."
    ),
]
Volume = Annotated[
    str | None,
    typer.Option(
        help="Predictions the model will serve, e.g. 1e6, 2.4M or 1e6/month: choose the rung "
        "and shipped format by training + volume x serving cost, and report the break-even "
        "volumes."
    ),
]
MaxDrop = Annotated[
    float,
    typer.Option(
        help="Points of validation accuracy and macro-F1 a compression step may lose; "
        "a step losing more is rejected and the previous one ships."
    ),
]
Mlflow = Annotated[
    bool,
    typer.Option(
        "--mlflow",
        help="Log the finished run to MLflow: a run for the ladder (settings, reports, bundle) "
        "with a nested run per rung (metrics, cost card, training curve). Logs to "
        f"$MLFLOW_TRACKING_URI if set, else {tracking.DEFAULT_URI} in the current folder "
        f"(artifacts in ./{tracking.ARTIFACTS}). Needs the 'mlflow' extra.",
    ),
]
MlflowUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        metavar="<uri>",
        help="Log to this MLflow tracking URI instead (implies --mlflow), e.g. "
        "sqlite:///path/runs.db or http://host:5000.",
    ),
]


@app.command()
def fit(
    data: Annotated[
        Path | None, typer.Argument(help="CSV, TSV, JSONL, Parquet, text, HF folder or hf://NAME.")
    ] = None,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    test: Annotated[Path | None, typer.Option(help="A separate test set (else split off).")] = None,
    val: Annotated[
        Path | None,
        typer.Option(
            help="Validation data like what the model will see (else split off DATA, which "
            "then gives only the test set): the ladder chooses on it."
        ),
    ] = None,
    strategies: Annotated[
        str, typer.Option(help="Comma-separated rungs to climb (see `frugalml strategies`).")
    ] = ",".join(DEFAULT_STRATEGIES),
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder to create.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split and training.")] = 0,
    metric: Annotated[
        str,
        typer.Option(
            help=f"What to choose by: {', '.join(metric_names())} (brier and log_loss: lower "
            "is better; recall@5 sets k)."
        ),
    ] = "macro_f1",
    target: Annotated[
        str | None,
        typer.Option(
            help="Quality bar (macro_f1=0.90, brier=0.1): stop at the first rung meeting it "
            "(at or below it for a lower-is-better metric); its metric replaces --metric"
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="Count the target as met only when the validation score's whole 95% interval "
            "clears it: no stop on a lucky small validation set, at the price of climbing "
            "further. --no-strict: the point estimate suffices."
        ),
    ] = True,
    budget: Annotated[
        str | None,
        typer.Option(
            help="Hard cap for the whole ladder: 10m, 90s, $0.05, 0.01kWh (comma-join several)."
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="Encoder of every transformer rung: 'minilm', hf://ORG/NAME, folder."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Strategy setting, e.g. lora.r=16 or full.train.epochs=5 (repeatable)."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Finish a killed run in this folder: finished rungs are kept, the interrupted one "
            "continues from its last checkpoint."
        ),
    ] = None,
    drop_invalid: Annotated[
        bool, typer.Option(help="Drop invalid rows instead of failing.")
    ] = False,
    delimiter: Delimiter = None,
    force: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
    ship: Ship = None,
    max_drop: MaxDrop = 1.0,
    volume: Volume = None,
    mlflow: Mlflow = False,
    mlflow_uri: MlflowUri = None,
    nproc: Annotated[
        int,
        typer.Option(
            help="Train torch rungs (top_layers, setfit, lora, full) data-parallel on this many "
            "processes per node under torchrun (gloo on CPU, NCCL on GPU); each takes "
            "the rung's batch size, and CPU threads are shared out among them."
        ),
    ] = 1,
    nnodes: Annotated[
        str, typer.Option(help="Nodes (N), or MIN:MAX for an elastic job; needs --rdzv-endpoint.")
    ] = "1",
    rdzv_endpoint: Annotated[
        str | None, typer.Option(help="HOST:PORT of node 0, where every node meets (c10d).")
    ] = None,
    node_rank: Annotated[
        int,
        typer.Option(
            help="This node's rank. Node 0 runs the ladder (give it DATA); another node runs "
            "`frugalml fit --node-rank R --nnodes N --nproc P --rdzv-endpoint HOST:PORT` "
            "without DATA and trains each torch rung with it."
        ),
    ] = 0,
    max_restarts: Annotated[
        int,
        typer.Option(
            help="Restart the ranks this many times after a failure; they resume from the "
            "last epoch checkpoint."
        ),
    ] = 0,
) -> None:
    """Climb the ladder on DATA, print the leaderboard, write the report and the chosen bundle."""
    uri = mlflow_uri or (tracking.default_uri() if mlflow else None)
    scale = _scale(nproc, nnodes, rdzv_endpoint, node_rank, max_restarts)
    if _under_torchrun(scale) > 0:
        return  # a rank other than 0 trained each torch rung with rank 0, which climbed
    if scale.node_rank > 0:
        if data is not None or resume is not None:
            raise ConfigError(f"node {node_rank} takes no DATA: node 0 sends each job")
        from frugalml.ladder.scale import follow

        trained = follow(scale, out_dir or Path("runs") / f"node{node_rank}")
        out.print(f"node {node_rank}: trained {trained} torch rung(s) with node 0")
        return
    if resume is not None:
        if data is not None:
            raise ConfigError(
                "pass DATA or --resume RUN_DIR, not both: a resumed run reuses "
                "the data and settings it started with"
            )
        _show(lambda progress: api.resume_fit(resume, progress=progress, mlflow=uri), uri)
        return
    if data is None:
        raise ConfigError(
            "missing DATA", ["frugalml fit DATA [options], or frugalml fit --resume RUN_DIR"]
        )
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    metric_name, bar = (metric, None) if target is None else parse_target(target)
    options = parse_overrides(overrides or [])
    if backbone:
        for name in names:
            if "backbone" in get_strategy(name).config.model_fields:
                options.setdefault(name, {})["backbone"] = backbone
    run_dir = out_dir or Path("runs") / f"{data.stem}-{datetime.now():%Y%m%d-%H%M%S}"
    _show(
        lambda progress: api.fit(
            data,
            out=run_dir,
            text_col=text_col,
            label_col=label_col,
            test=test,
            val=val,
            strategies=names,
            metric=metric_name,
            target=bar,
            strict=strict,
            ship=ship,
            max_drop=max_drop,
            volume=volume,
            budget=parse_budget(budget) if budget else None,
            split=SplitConfig(seed=seed),
            drop_invalid=drop_invalid,
            delimiter=delimiter,
            force=force,
            options=options,
            progress=progress,
            mlflow=uri,
            scale=scale,
        ),
        uri,
    )


def _under_torchrun(scale: Scale) -> int:
    """Under `torchrun -m frugalml fit ...`: join the group; a rank other than 0 trains each
    torch rung rank 0 sends it, until rank 0's ladder is done. This rank (0 elsewhere)."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or "TORCHELASTIC_RUN_ID" not in os.environ:
        return 0
    if scale.parallel:
        raise ConfigError(
            "under torchrun, fit takes no --nproc, --nnodes or --max-restarts",
            ["give them to torchrun, or run `frugalml fit --nproc N` without torchrun"],
        )
    from frugalml.ladder.scale import join_torchrun, serve_rank0

    rank = join_torchrun()
    if rank > 0:
        serve_rank0()
    return rank


def _scale(
    nproc: int, nnodes: str, rdzv_endpoint: str | None, node_rank: int, max_restarts: int
) -> Scale:
    """The data-parallel options as one `Scale`; every problem named by its option."""
    from pydantic import ValidationError

    try:
        return Scale(
            nproc=nproc,
            nnodes=nnodes,
            rdzv_endpoint=rdzv_endpoint,
            node_rank=node_rank,
            max_restarts=max_restarts,
        )
    except ValidationError as error:
        raise ConfigError(
            "invalid data-parallel options",
            [
                f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"]
                for e in error.errors()
            ],
        ) from None


@app.command()
def demo(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder to create.")] = None,
    strategies: Annotated[str, typer.Option(help="Comma-separated rungs.")] = ",".join(
        DEFAULT_STRATEGIES
    ),
    target: Annotated[
        str | None, typer.Option(help="Quality bar; the ladder stops at the first rung meeting it.")
    ] = "macro_f1=0.95",
    strict: Annotated[
        bool,
        typer.Option(
            help="Meet the bar with the whole 95% interval, as fit does; off by default here: "
            "84 validation texts give intervals too wide for a quick demo."
        ),
    ] = False,
    mlflow: Mlflow = False,
    mlflow_uri: MlflowUri = None,
) -> None:
    """Run the ladder on the embedded bank customer-service demo (14 intents) up to a bar."""
    fit(
        DEMO_INTENTS,
        text_col="text",
        label_col="label",
        strategies=strategies,
        out_dir=out_dir or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}",
        target=target,
        strict=strict,
        mlflow=mlflow,
        mlflow_uri=mlflow_uri,
    )


@app.command()
def predict(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (e.g. RUN_DIR/bundle).")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input", help="File of texts: .txt (one per line) or any table format."),
    ] = None,
    text_col: TextCol = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write here (.csv, .jsonl or .parquet) instead of JSON lines on stdout. With "
            "--input, the file is streamed in chunks (bounded memory), and a killed run "
            "started again skips the chunks it had finished."
        ),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option(help="Texts per chunk when streaming --input to --output.", min=1)
    ] = 10_000,
    force: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Score the streamed chunks on a Ray cluster (needs --input and --output): "
            "'local' starts one here, 'auto' joins the one `ray start` runs on this machine, "
            "or HOST:PORT / ray://HOST:PORT. Each actor loads the bundle from its path.",
        ),
    ] = None,
    ray_actors: Annotated[
        int, typer.Option(help="Ray actors (one CPU each) scoring chunks with --ray.", min=1)
    ] = 2,
) -> None:
    """Predict labels and probabilities: one JSON object per input."""
    if input_file is not None and output is not None and not texts:
        _check_output(output, force)
        _stream(bundle, input_file, output, text_col, chunk_rows, force, ray, ray_actors)
        return
    if ray is not None:
        raise ConfigError("--ray scores a file", ["pass --input FILE and --output FILE with it"])
    inputs = _prediction_inputs(texts or [], input_file, text_col)
    if output is not None:
        _check_output(output, force)
    model = bundles.load(bundle)
    records = [{"text": t, **r} for t, r in zip(inputs, model.predict(inputs), strict=True)]
    if output is None:
        for record in records:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    from frugalml.stream import csv_header, csv_rows, jsonl_rows, output_format

    proba = np.array([[r["probabilities"][k] for k in model.labels] for r in records])
    text = (
        csv_header(model.labels) + csv_rows(inputs, proba, model.labels)
        if output_format(output) == "csv"
        else jsonl_rows(inputs, proba, model.labels)
    )
    try:
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as error:
        raise OutputError(
            f"cannot write predictions to {output}: {error.strerror or error}",
            ["choose an --output in a folder you can write to"],
        ) from None
    err.print(f"wrote {len(records)} predictions to {output}", soft_wrap=True)


def _stream(
    bundle: Path,
    source: Path,
    output: Path,
    text_col: str | None,
    chunk_rows: int,
    force: bool,
    ray: str | None,
    ray_actors: int,
) -> None:
    """Score a file chunk by chunk (here, or on Ray actors), with a progress bar on a
    terminal."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn

    from frugalml.stream import predict_file, ray_scoring

    model = bundles.load(bundle)
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    elsewhere = nullcontext() if ray is None else ray_scoring(bundle, ray, ray_actors)
    with (
        elsewhere as scoring,
        RichProgress(*columns, console=err, disable=not err.is_terminal) as bar,
    ):
        task = bar.add_task("scoring", total=None)
        result = predict_file(
            model,
            source,
            output,
            text_col=text_col,
            chunk_rows=chunk_rows,
            force=force,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            scoring=scoring,
        )
    reused = f" ({result.reused} chunks reused from a killed run)" if result.reused else ""
    err.print(f"wrote {result.rows} predictions to {output}{reused}", soft_wrap=True)


def _check_output(output: Path, force: bool) -> None:
    """Refuse, before any work, an --output that is a folder, lies in no folder, or exists."""
    problem = ""
    if output.is_dir():
        problem = "it is a folder"
    elif output.parent.exists() and not output.parent.is_dir():
        problem = f"{output.parent} is a file, not a folder"
    elif not output.parent.exists():
        problem = f"the folder {output.parent} does not exist"
    if problem:
        raise OutputError(
            f"cannot write predictions to {output}: {problem}",
            ["name a file in an existing folder, e.g. predictions.jsonl or predictions.csv"],
        )
    if output.exists() and not force:
        raise OutputExistsError(
            f"{output} already exists", ["choose another --output or pass --force"]
        )


@app.command()
def compress(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (e.g. RUN_DIR/candidates/full).")],
    to: Annotated[
        str,
        typer.Option(
            help="Last step of the chain: onnx, int8 or distilled; auto: the accepted step "
            "cheapest to own at --volume."
        ),
    ] = "int8",
    max_drop: MaxDrop = 1.0,
    volume: Volume = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="New bundle folder (default: BUNDLE-TO).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Labeled data to gate on (its validation split); default: the bundle's run data."
        ),
    ] = None,
    text_col: TextCol = None,
    label_col: LabelCol = None,
    nproc: Annotated[
        int,
        typer.Option(
            help="Distill the student data-parallel on this many processes under torchrun "
            "(gloo on CPU, NCCL on GPU); each takes the distillation's batch size."
        ),
    ] = 1,
) -> None:
    """Export to ONNX, quantize to int8, distill: each step gated on validation quality.

    A TF-IDF bundle's chain is the ONNX step alone (nothing to quantize or distill).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        raise ConfigError(
            "compress does not run under torchrun: every rank would run the whole chain",
            ["run `frugalml compress BUNDLE --nproc N`: it starts torchrun for distillation"],
        )
    scale = _scale(nproc, "1", None, 0, 0)
    target = out_dir or bundle.with_name(f"{bundle.name}-{to}")
    result = api.compress_bundle(
        bundle,
        out=target,
        data=data,
        text_col=text_col,
        label_col=label_col,
        to=to,
        max_drop=max_drop,
        volume=volume,
        progress=lambda event, info: err.print(_compress_line(info["step"])),
        scale=scale,
    )
    for name, why in result.skipped.items():
        err.print(f"  skip {name}: {why}")
    out.print(f"shipped: {result.shipped.name}\nbundle: {result.bundle}")


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder.")],
    data: Annotated[Path, typer.Argument(help="Labeled data in any supported format.")],
    text_col: TextCol = None,
    label_col: LabelCol = None,
    delimiter: Delimiter = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Score a bundle on labeled data: accuracy and macro-F1 with 95% CIs, per class."""
    model = bundles.load(bundle)
    dataset = api.load_dataset(
        data, text_col=text_col, label_col=label_col, delimiter=delimiter, min_per_class=1
    )
    unknown = sorted(set(dataset.labels) - set(model.labels))
    if unknown:
        raise ConfigError(
            f"{data} has labels the bundle does not know: {', '.join(unknown[:10])}",
            [f"the bundle's labels are: {', '.join(model.labels[:20])}"],
        )
    index = {label: i for i, label in enumerate(model.labels)}
    y_true = np.array([index[dataset.labels[i]] for i in dataset.y])
    quality = score(y_true, model.predict_proba(dataset.texts).argmax(1), model.labels)
    if as_json:
        sys.stdout.write(json.dumps(quality.to_dict(), indent=2) + "\n")
        return
    (accuracy, (a_low, a_high)), (f1, (f_low, f_high)) = map(
        quality.estimate, ("accuracy", "macro_f1")
    )
    out.print(
        f"{quality.n} examples: accuracy {accuracy:.3f} ({a_low:.3f}–{a_high:.3f}), "
        f"macro-F1 {f1:.3f} ({f_low:.3f}–{f_high:.3f})"
    )
    table = RichTable("class", "precision", "recall", "F1", "support")
    for label, row in quality.per_class.items():
        if row["support"]:
            table.add_row(
                label,
                f"{row['precision']:.3f}",
                f"{row['recall']:.3f}",
                f"{row['f1']:.3f}",
                str(int(row["support"])),
            )
    out.print(table)


@app.command()
def info(bundle: Annotated[Path, typer.Argument(help="A bundle folder.")]) -> None:
    """Show what a bundle is: strategy, labels, quality, cost card, speed, and its integrity."""
    model = bundles.load(bundle)  # validates the manifest and verifies checksums first
    m = model.manifest
    table = RichTable(show_header=False)
    table.add_row("strategy", m.strategy)
    table.add_row("task", m.task)
    table.add_row(
        "labels",
        f"{len(m.labels)}: {', '.join(m.labels[:12])}" + (" ..." if len(m.labels) > 12 else ""),
    )
    quality = m.metrics.model_dump() if m.metrics else {}
    for split in ("val", "test"):
        if quality.get(split):
            table.add_row(f"{split} quality", _quality_line(quality[split]))
    if m.train_cost is not None:
        from frugalml.costs import CostCard

        table.add_row("training cost", CostCard.from_dict(m.train_cost.model_dump()).summary())
    if m.speed is not None:
        s = m.speed
        table.add_row(
            "speed",
            f"p50 {s.latency_p50_ms:.1f} ms, p95 {s.latency_p95_ms:.1f} "
            f"ms at batch 1; {s.throughput_per_s:.0f} texts/s at batch {s.throughput_batch}",
        )
    table.add_row("data fingerprint", m.data_fingerprint[:16])
    table.add_row("frugalml", f"{m.frugalml_version} (schema {m.schema_version})")
    table.add_row("version", model.version)
    table.add_row("integrity", model.integrity.describe())
    out.print(table)


@app.command()
def sign(bundle: Annotated[Path, typer.Argument(help="A bundle folder.")]) -> None:
    """Sign a bundle with the key in $FRUGALML_SIGNING_KEY, after verifying it, so that
    frugalml with the same key set (a server, `predict`) loads it."""
    integrity = bundles.sign_bundle(bundle)
    out.print(f"signed {bundle}: {integrity.describe()}", highlight=False, soft_wrap=True)


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (e.g. RUN_DIR/bundle).")],
    host: Annotated[
        str, typer.Option(help="Interface to bind; beyond loopback, set --api-key-env too.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Processes, each with its own model.")] = 1,
    threads: Annotated[
        int | None, typer.Option(help="Inference threads per worker [default: cores / workers].")
    ] = None,
    spinning: Annotated[
        bool,
        typer.Option(help="Idle inference threads busy-wait: faster, but burn CPU while idle."),
    ] = True,
    max_batch: Annotated[int, typer.Option(help="Texts per batch; 1 turns batching off.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits to fill.")] = 5.0,
    max_queue: Annotated[int, typer.Option(help="Texts queued before 503.")] = 1024,
    max_concurrency: Annotated[int, typer.Option(help="Requests in flight before 429.")] = 256,
    max_texts: Annotated[int, typer.Option(help="Texts in one request.")] = 256,
    max_chars: Annotated[int, typer.Option(help="Characters in one text.")] = 10_000,
    max_body_bytes: Annotated[int, typer.Option(help="Bytes in one request body.")] = 1_048_576,
    request_timeout_s: Annotated[
        float, typer.Option(help="Seconds a predict request may take before 503.")
    ] = 10.0,
    shutdown_timeout_s: Annotated[
        float, typer.Option(help="Seconds to finish in-flight requests after SIGTERM.")
    ] = 30.0,
    header_timeout_s: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's headers.")
    ] = 10.0,
    body_timeout_s: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's body before 408.")
    ] = 10.0,
    max_connections_per_client: Annotated[
        int | None,
        typer.Option(help="Connections from one address before 429 (off behind a proxy)."),
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the API key.")
    ] = None,
    admin_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the key that may reload.")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve BUNDLE over HTTP: micro-batched predictions, Prometheus metrics, auth, hot reload."""
    from frugalml.serve.launch import run
    from frugalml.serve.settings import settings_from_options

    settings = settings_from_options(
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        spinning=spinning,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        max_concurrency=max_concurrency,
        max_texts=max_texts,
        max_chars=max_chars,
        max_body_bytes=max_body_bytes,
        request_timeout_s=request_timeout_s,
        shutdown_timeout_s=shutdown_timeout_s,
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        max_connections_per_client=max_connections_per_client,
        api_key_env=api_key_env,
        admin_key_env=admin_key_env,
        access_log=access_log,
    )
    if settings.public and api_key_env is None:
        err.print(
            Text.assemble(
                ("warning: ", "yellow"),
                f"serving on {host} without --api-key-env: anyone who can reach "
                "this port can use the model",
            )
        )
    run(bundle, settings)


@app.command("strategies")
def list_strategies() -> None:
    """List the ladder's rungs, cheapest first, and whether each can run here."""
    from frugalml.strategies import registered

    table = RichTable("strategy", "rank", "available", "what it is")
    for r in registered():
        ok = "yes" if r.available() else f"no: pip install 'frugalml[{r.extra}]'"
        table.add_row(r.name, str(r.cost_rank), ok, r.summary)
    out.print(table)


# -- helpers -------------------------------------------------------------------------
def _show(run: Callable[[Progress], api.FitResult], mlflow_uri: str | None = None) -> None:
    """Run a fit with progress (forecast, then actual, per rung) and print the outcome.

    On a terminal, progress is a live display; off one (CI, nohup, a pipe) a live display
    would print only when it ends, so each event is one flushed line, as it happens.
    """
    live = err.is_terminal
    handler: logging.Handler = RichHandler(console=err, show_time=False, show_path=False)
    if not live:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("frugalml").addHandler(handler)
    logging.getLogger("frugalml").setLevel(logging.INFO)
    try:
        if live:
            with RichProgress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            ) as bar:
                result = run(_progress_printer(bar))
        else:
            result = run(_event_printer)
    finally:
        logging.getLogger("frugalml").removeHandler(handler)
    _print_outcome(result, mlflow_uri)


def _print_outcome(result: api.FitResult, mlflow_uri: str | None) -> None:
    """Notes, the leaderboard and the summary; each summary line stays one line in a log."""
    for note in result.notes:
        err.print(Text.assemble(("note: ", "yellow"), note), soft_wrap=True)
    _print_leaderboard(result, result.metric)
    ladder = result.ladder
    out.print()
    out.print(
        Text.assemble(("chosen: ", "bold"), f"{ladder.chosen.strategy} — {ladder.reason}"),
        soft_wrap=True,
    )
    if ladder.shortfall is not None:
        out.print(
            Text.assemble(("warning: ", "bold yellow"), ladder.shortfall.message()), soft_wrap=True
        )
    out.print(f"bundle: {result.run_dir / 'bundle'}\nreport: {result.report_md}", soft_wrap=True)
    html = result.run_dir / "report.html"
    if html.exists():
        out.print(f"report.html: {html}", soft_wrap=True)
    if result.mlflow_run_id:
        out.print(f"mlflow: run {result.mlflow_run_id} in {mlflow_uri}", soft_wrap=True)


def _event_line(event: str, info: dict[str, Any]) -> str:
    """One line for a ladder event: a rung's forecast, start, actual, skip, or a ship step."""
    if event == "compress":
        return _compress_line(info["step"]).strip()
    name = info["strategy"]
    if event == "forecast":
        f = info["forecast"]
        return f"{name}: forecast {f['wall_s']:.1f} s, {f['cpu_s']:.1f} CPU-s, ${f['usd']:.5f}"
    if event == "start":
        return f"{name}: fitting"
    if event in ("done", "reused"):
        c: Candidate = info["candidate"]
        what = (
            "reused from the earlier run"
            if event == "reused"
            else f"actual {c.cost.wall_s:.1f} s, {c.cost.cpu_s:.1f} CPU-s, ${c.cost.usd:.5f}"
        )
        metric = info["metric"]
        return f"{name}: {what}; val {metric} {c.val.metric(metric):.3f}"
    if event == "skipped":
        return f"{name}: skipped ({info['reason']})"
    return f"{name}: {event}"


def _event_printer(event: str, info: dict[str, Any]) -> None:
    """Off a terminal: each event as one line on stderr, flushed at once."""
    sys.stderr.write(_event_line(event, info) + "\n")
    sys.stderr.flush()


def _progress_printer(bar: RichProgress) -> Progress:
    """On a terminal: a spinner per rung that turns into its outcome; forecasts and ship
    steps print above the display."""
    tasks: dict[str, Any] = {}

    def progress(event: str, info: dict[str, Any]) -> None:
        line = _event_line(event, info)
        if event in ("forecast", "compress"):
            err.print(f"  {line}", soft_wrap=True)
        elif event == "start":
            tasks[info["strategy"]] = bar.add_task(line, total=1)
        elif info.get("strategy") in tasks:
            bar.update(tasks[info["strategy"]], completed=1, description=line)
        else:
            bar.add_task(line, total=1, completed=1)

    return progress


def _quality_line(quality: dict[str, Any]) -> str:
    """'accuracy 0.940, macro-F1 0.942 (n=84)', from whichever of those figures are numbers."""
    names = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
    parts = [
        f"{label} {quality[key]:.3f}"
        for key, label in names.items()
        if isinstance(quality.get(key), int | float)
    ]
    return ", ".join(parts) + (f" (n={quality['n']})" if "n" in quality else "")


def _compress_line(step: dict[str, Any]) -> str:
    drop = step["drop_points"]
    lost = "" if drop is None else f", {max(drop.values()):+.2f} points"
    speed = step["speed"]
    return (
        f"  ship {step['name']}: val accuracy {step['val']['accuracy']:.3f}{lost}, "
        f"{step['size_mb']:.1f} MB, {speed['latency_p50_ms']:.1f} ms at batch 1, "
        f"{speed['throughput_per_s']:.0f}/s at batch {speed['throughput_batch']} — "
        f"{step['reason']}"
    )


def _print_leaderboard(result: api.FitResult, metric: str) -> None:
    table = RichTable(title="leaderboard (validation quality; cost of training)")
    for column in (
        "strategy",
        f"val {metric} [95% CI]",
        "ECE",
        f"test {metric}",
        "train s",
        "CPU-s",
        "peak MB",
        "Wh",
        "$",
        "p50 ms",
        "texts/s",
    ):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    ladder = result.ladder
    for c in ladder.candidates:
        low, high = c.val.interval(metric)
        short = " ⚠" if c is ladder.chosen and ladder.shortfall else ""
        table.add_row(
            c.strategy + (" ✔" if c is ladder.chosen else ""),
            f"{c.val.metric(metric):.3f} [{low:.2f}, {high:.2f}]",
            "—" if c.ece is None else f"{c.ece:.3f}",
            f"{c.test.metric(metric):.3f}{short}" if c.test else "—",
            f"{c.cost.wall_s:.1f}",
            f"{c.cost.cpu_s:.1f}",
            f"{c.cost.peak_rss_mb:.0f}",
            f"{c.cost.energy_kwh * 1000:.3f}{'*' if 'estimate' in c.cost.energy_source else ''}",
            f"{c.cost.usd:.5f}",
            f"{c.speed.latency_p50_ms:.1f}",
            f"{c.speed.throughput_per_s:.0f}",
        )
    out.print(table)
    if any("estimate" in c.cost.energy_source for c in result.ladder.candidates):
        source = result.ladder.candidates[0].cost.energy_source
        out.print(f"* energy is an {source}; no RAPL/NVML counter was readable")


def _prediction_inputs(
    texts: list[str], input_file: Path | None, text_col: str | None
) -> list[str]:
    if input_file is None:
        if not texts:
            raise ConfigError("nothing to predict", ["pass texts as arguments or --input FILE"])
        return texts
    if texts:
        raise ConfigError("pass texts as arguments or --input FILE, not both")
    if input_file.suffix.lower() == ".txt" and input_file.exists():
        from frugalml.data.load import decode, require_regular_file

        require_regular_file(input_file)  # a FIFO would block, a folder fail with a traceback
        text, _, _ = decode(input_file.read_bytes(), input_file)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise ConfigError(f"{input_file} has no non-empty lines")
        return lines
    return texts_for_prediction(read_table(input_file), text_col)


def main() -> None:
    """Entry point: user errors print one clear message and exit 2; bugs keep their traceback."""
    try:
        app()
    except FrugalError as error:
        message = Text.assemble(("error: ", "bold red"), error.render())
        err.print(message, highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
