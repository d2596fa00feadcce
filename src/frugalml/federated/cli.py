"""`frugalml federate ...`: a Typer sub-app. Only typer is imported here, so that
`frugalml --help` stays fast; each command imports Flower and torch when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Train one model across parties that keep their data (Flower).",
)


@app.command()
def simulate(
    data: Annotated[Path, typer.Argument(help="One labelled file, split into clients.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to create.")],
    clients: Annotated[int, typer.Option(min=1, help="Parties to split the data into.")] = 5,
    partition: Annotated[
        str, typer.Option(help="iid, dirichlet:ALPHA (label skew) or column:NAME.")
    ] = "dirichlet:1.0",
    rung: Annotated[str, typer.Option(help="frozen_probe (head only), lora or full.")] = "lora",
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    strategy: Annotated[
        str, typer.Option(help="fedavg, fedprox, fedmedian, fedtrimmedavg, krum, multikrum.")
    ] = "fedavg",
    local_epochs: Annotated[int, typer.Option(min=1, help="Epochs per client per round.")] = 1,
    min_clients: Annotated[
        int | None, typer.Option(help="Answers a round needs (default: all clients).")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Rung settings, e.g. lora.r=16.")
    ] = None,
    dp_epsilon: Annotated[
        float | None, typer.Option(help="Client-level DP: target epsilon over all rounds.")
    ] = None,
    dp_delta: Annotated[float, typer.Option(help="Client-level DP: target delta.")] = 1e-5,
    dp_clip: Annotated[float, typer.Option(help="Client-level DP: update clipping norm.")] = 1.0,
    byzantine: Annotated[
        int, typer.Option(min=0, help="Experiments: this many clients attack.")
    ] = 0,
    attack: Annotated[str, typer.Option(help="flip (labels) or scale (the update).")] = "scale",
    text_col: Annotated[str | None, typer.Option(help="Column with the text.")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column with the label.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
) -> None:
    """Split DATA into clients and federate them with Flower's simulation runtime; the run
    folder holds per-round metrics, bytes, cost cards, a report and the global bundle."""
    from frugalml.config import parse_overrides
    from frugalml.errors import ConfigError
    from frugalml.federated.settings import Privacy
    from frugalml.federated.simulation import simulate as run

    options = parse_overrides(overrides or [])
    unknown = sorted(set(options) - {rung})
    if unknown:
        raise ConfigError(f"--set names {unknown[0]}, but --rung is {rung}")
    if attack not in ("flip", "scale"):
        raise ConfigError(f"--attack must be flip or scale; got '{attack}'")
    privacy = (
        None if dp_epsilon is None else Privacy(epsilon=dp_epsilon, delta=dp_delta, clip=dp_clip)
    )
    report = run(
        data,
        out=out,
        clients=clients,
        partition_by=partition,
        rung=rung,
        rounds=rounds,
        strategy=strategy,
        local_epochs=local_epochs,
        options=options.get(rung, {}),
        min_clients=min_clients,
        privacy=privacy,
        attacks=dict.fromkeys(range(byzantine), attack),
        text_col=text_col,
        label_col=label_col,
        seed=seed,
        force=force,
    )
    typer.echo(
        f"test accuracy {report['test_accuracy']:.4f}, {report['bytes_total'] / 1e6:.2f} MB moved"
    )
    typer.echo(f"bundle: {report['bundle']}")
    typer.echo(f"report: {out / 'report.html'}")
