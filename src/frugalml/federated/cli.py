"""`frugalml federate ...`: a Typer sub-app. Only typer is imported here, so that
`frugalml --help` stays fast; each command imports Flower and torch when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from frugalml.federated.settings import SecureAggregation

app = typer.Typer(
    no_args_is_help=True,
    help="Train one model across parties that keep their data (Flower).",
)


# SecAgg+ options, shared by `simulate` and `server`.
SecAgg = Annotated[
    bool,
    typer.Option(
        help="Secure aggregation (Flower's SecAgg+): the server sees only the sum of the "
        "parties' updates (fedavg/fedprox; values quantized, see README)."
    ),
]
SecAggShares = Annotated[
    float, typer.Option(help="SecAgg+: parties a key is shared among (<= 1: a share).")
]
SecAggThreshold = Annotated[
    float, typer.Option(help="SecAgg+: shares that rebuild a key (<= 1: a share).")
]
SecAggClip = Annotated[
    float, typer.Option(help="SecAgg+: weighted values are quantized over +-this.")
]
SecAggMaxWeight = Annotated[
    int | None,
    typer.Option(
        help="SecAgg+: the largest party's examples (default: simulate's "
        "largest partition; a server's 10,000)."
    ),
]


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
    head_rounds: Annotated[
        int,
        typer.Option(
            min=0,
            help="lora/full: first train only the head over the encoder's embeddings for this "
            "many rounds (cheap), then --rounds rounds of the rung from that head.",
        ),
    ] = 0,
    head_epochs: Annotated[
        int, typer.Option(min=1, help="Epochs per client per head warm-up round.")
    ] = 5,
    solver: Annotated[
        str,
        typer.Option(
            help="strategy (average what parties train) or lbfgs (frozen_probe: the head "
            "solved exactly over the parties' summed gradients)."
        ),
    ] = "strategy",
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
    secagg: SecAgg = False,
    secagg_shares: SecAggShares = 1.0,
    secagg_threshold: SecAggThreshold = 0.6,
    secagg_clip: SecAggClip = 8.0,
    secagg_max_weight: SecAggMaxWeight = None,
    text_col: Annotated[str | None, typer.Option(help="Column with the text.")] = None,
    label_col: Annotated[str | None, typer.Option(help="Column with the label.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
) -> None:
    """Split DATA into clients and federate them with Flower's simulation runtime; the run
    folder holds per-round metrics, bytes, cost cards, a report and the global bundle."""
    from frugalml.errors import ConfigError
    from frugalml.federated.settings import Privacy
    from frugalml.federated.simulation import simulate as run

    options = _rung_options(overrides, rung)
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
        options=options,
        min_clients=min_clients,
        solver=solver,
        head_rounds=head_rounds,
        head_epochs=head_epochs,
        privacy=privacy,
        secagg=_secagg(secagg, secagg_shares, secagg_threshold, secagg_clip, secagg_max_weight),
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


@app.command()
def certs(
    folder: Annotated[Path, typer.Argument(help="Folder to write the files into.")],
    clients: Annotated[int, typer.Option(min=0, help="Client key pairs to make.")] = 0,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Server name or IP the certificate covers.")
    ] = None,
) -> None:
    """For trials and tests: a CA, a server certificate (ca.crt, server.pem, server.key) and
    client key pairs (client-N, client-N.pub). A real federation uses its parties' own."""
    from frugalml.federated.deployment import make_certificates, make_client_key

    made = make_certificates(folder, hosts=host or ["localhost", "127.0.0.1"])
    for i in range(clients):
        make_client_key(folder, f"client-{i}")
    typer.echo(f"CA {made.ca}; server certificate {made.cert}; {clients} client key pair(s)")


@app.command()
def server(
    allow: Annotated[
        list[Path], typer.Option("--allow", help="A client's public key; repeat per party.")
    ],
    tls: Annotated[
        Path, typer.Option("--certs", help="Folder with ca.crt, server.pem, server.key.")
    ],
    val: Annotated[
        Path | None, typer.Option(help="The server's labelled validation file (per-round score).")
    ] = None,
    test: Annotated[Path | None, typer.Option(help="The server's labelled test file.")] = None,
    labels: Annotated[
        str | None, typer.Option(help="Class names, comma-separated (default: --val's).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address the SuperLink listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The SuperLink's port (Fleet and Control).")] = 9093,
    rung: Annotated[str, typer.Option(help="frozen_probe (head only), lora or full.")] = "lora",
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    strategy: Annotated[str, typer.Option(help="fedavg, fedprox, fedmedian, ...")] = "fedavg",
    local_epochs: Annotated[int, typer.Option(min=1)] = 1,
    head_rounds: Annotated[
        int, typer.Option(min=0, help="lora/full: head-only warm-up rounds first.")
    ] = 0,
    head_epochs: Annotated[int, typer.Option(min=1)] = 5,
    solver: Annotated[
        str,
        typer.Option(
            help="strategy (average what parties train) or lbfgs (frozen_probe: the head "
            "solved exactly over the parties' summed gradients)."
        ),
    ] = "strategy",
    out: Annotated[Path | None, typer.Option("--out", help="Run folder to create.")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="A run folder whose server stopped: continue from its last saved round, "
            "with the same settings (instead of --out)."
        ),
    ] = None,
    min_clients: Annotated[
        int | None, typer.Option(help="Answers a round needs (default: every listed client).")
    ] = None,
    round_timeout: Annotated[float, typer.Option(help="Seconds a round waits.")] = 3600,
    wait_clients: Annotated[float, typer.Option(help="Seconds to wait for clients.")] = 600,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Rung settings, e.g. lora.r=16.")
    ] = None,
    dp_epsilon: Annotated[float | None, typer.Option(help="Client-level DP epsilon.")] = None,
    dp_delta: Annotated[float, typer.Option()] = 1e-5,
    dp_clip: Annotated[float, typer.Option()] = 1.0,
    secagg: SecAgg = False,
    secagg_shares: SecAggShares = 1.0,
    secagg_threshold: SecAggThreshold = 0.6,
    secagg_clip: SecAggClip = 8.0,
    secagg_max_weight: SecAggMaxWeight = None,
    force: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
) -> None:
    """Run a federation on Flower's deployment runtime: a SuperLink with TLS that admits only
    the --allow keys, installs nothing at run time, and runs once enough clients connect.
    After each round the server saves its state in the run folder; --resume continues it."""
    from frugalml.errors import ConfigError
    from frugalml.federated.deployment import Certificates, serve
    from frugalml.federated.settings import FederationSettings, Privacy
    from frugalml.federated.simulation import prepare_central

    if (out is None) == (resume is None):
        raise ConfigError("pass --out (a new run) or --resume (a stopped one), not both")
    options = _rung_options(overrides, rung)
    run_dir, names = prepare_central(
        out or resume,  # type: ignore[arg-type]  # one of them is set
        val=val,
        test=test,
        labels=labels,
        force=force,
        resume=resume is not None,
    )
    settings = FederationSettings(
        rung=rung,
        options=options,
        labels=names,
        rounds=rounds,
        local_epochs=local_epochs,
        head_rounds=head_rounds,
        head_epochs=head_epochs,
        strategy=strategy,
        solver=solver,
        clients=len(allow),
        min_clients=min_clients or len(allow),
        privacy=None
        if dp_epsilon is None
        else Privacy(epsilon=dp_epsilon, delta=dp_delta, clip=dp_clip),
        secagg=_secagg(secagg, secagg_shares, secagg_threshold, secagg_clip, secagg_max_weight),
        round_timeout_s=round_timeout,
    )
    report = serve(
        settings,
        run_dir,
        certs=Certificates.in_folder(tls),
        allowed=allow,
        host=host,
        port=port,
        wait_clients_s=wait_clients,
        resume=resume is not None,
    )
    accuracy = report.get("test_accuracy")
    typer.echo(f"test accuracy {accuracy}, {report['bytes_total'] / 1e6:.2f} MB moved")
    typer.echo(f"bundle: {report['bundle']}")


@app.command()
def client(
    data: Annotated[Path, typer.Option("--data", help="This party's labelled file.")],
    superlink: Annotated[str, typer.Option(help="The server's HOST:PORT.")],
    ca: Annotated[Path, typer.Option(help="The CA certificate that signed the server's.")],
    key: Annotated[Path, typer.Option(help="This party's private key (its .pub is listed).")],
    port: Annotated[int, typer.Option(help="Local port of the SuperNode's runtime API.")] = 9094,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the server to listen and admit this key.")
    ] = 600,
) -> None:
    """Join a federation as a SuperNode: trains on --data locally, sends only model updates,
    runs until stopped. Exits non-zero if the server still refuses this key after --wait."""
    from frugalml.federated.deployment import run_client, supernode_command, wait_until_listening

    cmd = supernode_command(data, superlink=superlink, ca=ca, key=key, port=port)
    wait_until_listening(superlink, wait)
    code = run_client(cmd, wait=wait)
    if code != 0:
        typer.echo(f"the SuperNode exited with code {code}", err=True)
        raise typer.Exit(code)


def _rung_options(overrides: list[str] | None, rung: str) -> dict[str, object]:
    from frugalml.config import parse_overrides
    from frugalml.errors import ConfigError

    options = parse_overrides(overrides or [])
    unknown = sorted(set(options) - {rung})
    if unknown:
        raise ConfigError(f"--set names {unknown[0]}, but --rung is {rung}")
    return dict(options.get(rung, {}))


def _secagg(
    on: bool, shares: float, threshold: float, clip: float, max_weight: int | None
) -> SecureAggregation | None:
    from frugalml.federated.settings import SecureAggregation

    if not on:
        return None
    return SecureAggregation(
        num_shares=shares,
        reconstruction_threshold=threshold,
        clipping_range=clip,
        max_weight=max_weight,
    )
