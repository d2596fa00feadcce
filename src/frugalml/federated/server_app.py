"""The Flower `ServerApp`: Flower's strategy runs the rounds; frugalml evaluates the global
model on the server's validation set after each, counts the bytes each round moved and what
each client spent, and writes the run folder with the final model as an ordinary bundle."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from frugalml.costs import CostCard, CostMeter
from frugalml.data.dataset import Dataset
from frugalml.errors import FrugalError
from frugalml.federated.partition import read_client
from frugalml.federated.settings import FederationSettings, global_round
from frugalml.federated.strategies import make_strategy, spent_epsilon, with_privacy
from frugalml.federated.task import FineTuneJob, HeadJob, Job, build_job, rung_config
from frugalml.metrics import macro_f1


class FederationError(FrugalError, RuntimeError):
    """A federated run could not complete (e.g. too few clients answered)."""


@dataclass
class Round:
    """One round as the server saw it."""

    round: int
    stage: str = ""  # "head" (a warm-up round), else the rung's name
    bytes_down: int = 0
    bytes_up: int = 0
    answered: list[int] = field(default_factory=list)
    failed: int = 0
    client_cpu_s: float = 0.0
    val_accuracy: float | None = None
    val_macro_f1: float | None = None
    epsilon: float | None = None


@dataclass
class Ledger:
    """What the rounds moved and cost, filled in as replies arrive."""

    rounds: dict[int, Round] = field(default_factory=dict)
    client_cards: dict[int, list[CostCard]] = field(default_factory=dict)

    def at(self, rnd: int) -> Round:
        return self.rounds.setdefault(rnd, Round(rnd))

    def write(self, run_dir: Path) -> None:
        """rounds.json as it stands: a long run shows its progress, and a killed one what it
        reached (the run's end rewrites it with the report)."""
        rounds = [asdict(r) for _, r in sorted(self.rounds.items())]
        (run_dir / "rounds.json").write_text(json.dumps(rounds, indent=2), encoding="utf-8")


class MeteredGrid:
    """Flower's Grid, counting the array bytes of every message each way. A proxy rather
    than a strategy subclass, so every Flower strategy (and DP wrapper) is metered alike."""

    def __init__(self, grid: Grid, ledger: Ledger) -> None:
        self._grid = grid
        self._ledger = ledger
        self._config = ConfigRecord()  # the round's, for SecAgg+'s messages that carry none

    def expect(self, config: ConfigRecord) -> None:
        """Book the messages that follow, carrying no config of their own, to this round."""
        self._config = config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        sent = list(messages)
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        if not sent:
            return replies
        content = sent[0].content
        config = cast(ConfigRecord, content.get("config", self._config))
        entry = self._ledger.at(global_round(config))
        entry.stage = str(config.get("stage") or config.get("rung", ""))
        entry.bytes_down += sum(_payload_bytes(m) for m in sent)
        for reply in replies:
            if not reply.has_content():
                entry.failed += 1
                continue
            entry.bytes_up += _payload_bytes(reply)
            if "metrics" in reply.content and sent[0].metadata.message_type in ("train", "query"):
                self._client_metrics(entry, cast(MetricRecord, reply.content["metrics"]))
        return replies

    def _client_metrics(self, entry: Round, m: MetricRecord) -> None:
        client = int(m["client"])  # type: ignore[arg-type]
        entry.answered.append(client)
        entry.client_cpu_s += float(m["cpu-s"])  # type: ignore[arg-type]
        card = CostCard(
            wall_s=float(m["wall-s"]),  # type: ignore[arg-type]
            cpu_s=float(m["cpu-s"]),  # type: ignore[arg-type]
            peak_rss_mb=float(m["peak-rss-mb"]),  # type: ignore[arg-type]
            energy_kwh=float(m["energy-kwh"]),  # type: ignore[arg-type]
            energy_source="reported by the client",
            usd=float(m["usd"]),  # type: ignore[arg-type]
            price_basis="the client's",
            flops=float(m["flops"]) or None,  # type: ignore[arg-type]
        )
        self._ledger.client_cards.setdefault(client, []).append(card)


def _payload_bytes(message: Message) -> int:
    """The arrays a message carries, and with --secagg the SecAgg+ record (public keys,
    encrypted key shares, masked states, unmasking shares)."""
    content = message.content
    secure = content.get(RECORD_KEY_CONFIGS)
    arrays = sum(r.count_bytes() for r in content.values() if isinstance(r, ArrayRecord))
    return arrays + (0 if secure is None else _config_bytes(cast(ConfigRecord, secure)))


def _config_bytes(record: ConfigRecord) -> int:
    """As `ConfigRecord.count_bytes` (8 per number), which fails on an empty list."""
    values = [x for v in record.values() for x in (v if isinstance(v, list) else [v])]
    return sum(len(x) if isinstance(x, str | bytes) else 8 for x in values)


def make_server_app(settings: FederationSettings, run_dir: Path, resume: bool = False) -> ServerApp:
    """A ServerApp that runs `settings` and writes `run_dir` (its `central/` folder, when
    present, holds the server's validation and test sets); `resume`: from its checkpoint."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        federate(grid, settings, run_dir, resume=resume)

    return app


def federate(grid: Grid, settings: FederationSettings, run_dir: Path, resume: bool = False) -> None:
    """Run the rounds with Flower's strategy, then write the run folder and the bundle.
    Every round ends saved in `run_dir/checkpoint/`; `resume` continues from that round."""
    from frugalml.federated import checkpoint as saved_run
    from frugalml.federated.outputs import write_run

    settings.check_solver()
    # --- resume: the last completed round, if asked (federated/checkpoint.py) ---
    saved = saved_run.load(run_dir, settings) if resume else None
    done = saved.round if saved is not None else 0
    ledger = saved.ledger if saved is not None else Ledger()
    session = saved_run.Session()
    # ---
    val, test = central_data(run_dir, settings.labels)
    with CostMeter() as meter:
        job = build_job(
            settings.rung, settings.options, val or _stub(settings), val or _stub(settings)
        )
        # client-level DP counts each client once: an unweighted mean (Flower requires it)
        strategy = _strategy(settings, unit_weight=settings.privacy is not None)
        wrapped = strategy
        if settings.privacy is not None:
            p = settings.privacy
            wrapped = with_privacy(  # type: ignore[assignment]
                strategy,
                epsilon=p.epsilon,
                delta=p.delta,
                rounds=settings.rounds,
                clients=settings.clients,
                clip=p.clip,
            )
        spent = getattr(wrapped, "accountant", None)
        if saved is not None:
            _load_into(job, saved.state)
            if spent is not None and saved.accountant is not None:
                spent.load_state_dict(saved.accountant)

        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
            entry = ledger.at(rnd)
            entry.epsilon = spent_epsilon(wrapped)
            state = arrays.to_torch_state_dict()
            accuracy = None if val is None else _score(job, state, val, entry)
            ledger.write(run_dir)
            cards = [*(saved.server_cards if saved is not None else []), session.card()]
            accounted = None if spent is None else spent.state_dict()
            saved_run.save(
                run_dir, saved_run.Checkpoint(rnd, state, ledger, cards, accounted), settings
            )
            return None if accuracy is None else MetricRecord({"val-accuracy": accuracy})

        sent = {**settings.sent(), "options": json.dumps(settings.options)}
        if settings.solver == "lbfgs":
            evaluate(0, ArrayRecord(job.state()))
            head = cast(HeadJob, job)  # check_solver: frozen_probe
            head.load_theta(solve_head_on(grid, settings, ledger, head, sent))
            evaluate(max(ledger.rounds), ArrayRecord(job.state()))
        else:
            metered = cast(Grid, MeteredGrid(grid, ledger))
            if settings.secagg is not None:  # --secagg: rounds through SecAgg+ (secure.py)
                from frugalml.federated.secure import SecureGrid

                metered = cast(
                    Grid,
                    SecureGrid(
                        metered,
                        settings.secagg,
                        timeout=settings.round_timeout_s,
                        on_round=cast(MeteredGrid, metered).expect,
                    ),
                )
            if done < settings.head_rounds:
                warm_up_head(metered, settings, cast(FineTuneJob, job), sent, evaluate, done)
            offset = max(done, settings.head_rounds)
            if offset < settings.head_rounds + settings.rounds:
                result = wrapped.start(
                    grid=metered,
                    initial_arrays=ArrayRecord(job.state()),
                    num_rounds=settings.head_rounds + settings.rounds - offset,
                    timeout=settings.round_timeout_s,
                    train_config=ConfigRecord({**sent, "round-offset": offset}),
                    evaluate_fn=_after(offset, evaluate),
                )
                job.load(result.arrays.to_torch_state_dict())
        if not any(r.answered for r in ledger.rounds.values()):
            raise FederationError(
                "no client completed a round", ["check the clients' logs and --min-clients"]
            )
        predictor = job.finish()
    server = meter.card
    if saved is not None:  # the server processes before the restart spent too
        from frugalml.federated.outputs import in_turn

        server = in_turn([*saved.server_cards, server])
    write_run(run_dir, settings, predictor, ledger, server, val, test)


def _score(job: Job, state: dict[str, Any], val: Dataset, entry: Round) -> float:
    """The global model's validation scores, into `entry`; its accuracy."""
    _load_into(job, state)
    predicted = job.logits(val).argmax(1)
    entry.val_accuracy = float(np.mean(predicted == val.y))
    entry.val_macro_f1 = macro_f1(val.y, predicted, len(val.labels))
    return entry.val_accuracy


def _load_into(job: Job, state: dict[str, Any]) -> None:
    """A global state into `job`: after a warm-up round the head alone travelled."""
    if isinstance(job, FineTuneJob) and len(state) < len(job.state()):
        job.load_head(state)
    else:
        job.load(state)


Evaluate = Callable[[int, ArrayRecord], MetricRecord | None]


def warm_up_head(
    grid: Grid,
    settings: FederationSettings,
    job: FineTuneJob,
    sent: dict[str, Any],
    evaluate: Evaluate,
    done: int = 0,
) -> None:
    """`--head-rounds`: Flower's strategy averages the head alone, trained by each party over
    the untouched encoder's embeddings, for the first rounds; `job` ends holding that head,
    the rung's rounds start from it (a random head over 77 classes otherwise costs the
    rung's rounds learning it under non-IID drift, with every adapter moving as it does).
    A resumed run has `done` of them done already."""
    strategy = _strategy(settings, unit_weight=False)
    config = {**sent, "stage": "head", "local-epochs": settings.head_epochs, "round-offset": done}
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(job.head_state()),
        num_rounds=settings.head_rounds - done,
        timeout=settings.round_timeout_s,
        train_config=ConfigRecord(config),
        evaluate_fn=_after(done, evaluate),
    )
    job.load_head(result.arrays.to_torch_state_dict())


def _strategy(settings: FederationSettings, *, unit_weight: bool) -> FedAvg:
    """Flower's strategy by name with the run's settings; `unit_weight` averages every party
    alike (what client-level DP needs) instead of by its examples."""
    return make_strategy(
        settings.strategy,
        clients=settings.clients,
        min_clients=settings.min_clients,
        proximal_mu=settings.proximal_mu,
        trim_beta=settings.trim_beta,
        malicious=settings.malicious,
        weighted_by_key="unit-weight" if unit_weight else "num-examples",
    )


def _after(offset: int, evaluate: Evaluate) -> Evaluate:
    """A later stage's (or a resumed run's) evaluation, numbered after the rounds before it;
    its round 0 is the last of those, already evaluated."""
    if not offset:
        return evaluate
    return lambda rnd, arrays: evaluate(offset + rnd, arrays) if rnd else None


def solve_head_on(
    grid: Grid, settings: FederationSettings, ledger: Ledger, job: HeadJob, sent: dict[str, Any]
) -> np.ndarray:
    """`--solver lbfgs`: the exact head solve (`head_solve.solve`), each of its queries one
    round to every party; a party that stops answering is dropped and the solve restarts
    with the rest (the objective is their sum, so it must not change mid-way)."""
    from flwr.serverapp.strategy.strategy_utils import sample_nodes

    from frugalml.federated.head_solve import DroppedError, solve

    metered = MeteredGrid(grid, ledger)
    _, nodes = sample_nodes(grid, settings.min_clients, 0)
    k, d = job.model.head.weight.shape
    Cs = rung_config(settings.rung, settings.options).Cs

    def query(op: str, rows: str, theta: np.ndarray) -> list[tuple[float, np.ndarray, int]]:
        config = ConfigRecord({**sent, "server-round": len(ledger.rounds), "op": op, "rows": rows})
        content = RecordDict({"arrays": ArrayRecord(numpy_ndarrays=[theta]), "config": config})
        messages = [Message(content, dst_node_id=n, message_type="query") for n in nodes]
        replies = metered.send_and_receive(messages, timeout=settings.round_timeout_s)
        done = {r.metadata.src_node_id: r for r in replies if r.has_content()}
        if len(done) < len(nodes):
            raise DroppedError(sorted(done))
        return [
            (
                float(cast(MetricRecord, r.content["metrics"])["loss"]),  # type: ignore[arg-type]
                cast(ArrayRecord, r.content["arrays"]).to_numpy_ndarrays()[0],
                int(cast(MetricRecord, r.content["metrics"])["num-examples"]),  # type: ignore[arg-type]
            )
            for _, r in sorted(done.items())
        ]

    while True:
        try:
            return solve(query, k, d, Cs).theta
        except DroppedError as dropped:
            if len(dropped.answered) < settings.min_clients:
                raise FederationError(
                    f"only {len(dropped.answered)} parties still answer the exact solve",
                    [f"it needs --min-clients {settings.min_clients}"],
                ) from dropped
            nodes = dropped.answered


def central_data(run_dir: Path, labels: tuple[str, ...]) -> tuple[Dataset | None, Dataset | None]:
    """The server's own validation and test sets (`central/val.json`, `central/test.json`)."""
    folder = run_dir / "central"
    found = [
        read_client(folder / name, labels) if (folder / name).exists() else None
        for name in ("val.json", "test.json")
    ]
    return found[0], found[1]


def _stub(settings: FederationSettings) -> Dataset:
    """A server without data still builds the model (to finish it): one text per label."""
    return Dataset.from_lists(settings.labels, settings.labels, label_names=settings.labels)


def _deployed() -> ServerApp:
    """The ServerApp `flwr run` starts on a SuperLink: the settings and run folder come in
    the run config that `deployment.write_app` wrote."""
    deployed = ServerApp()

    @deployed.main()
    def main(grid: Grid, context: Context) -> None:
        settings = FederationSettings.model_validate_json(str(context.run_config["settings"]))
        resume = bool(context.run_config.get("resume", False))
        federate(grid, settings, Path(str(context.run_config["run-dir"])), resume=resume)

    return deployed


app = _deployed()  # for `flwr run` on a SuperLink (see federated/deployment.py)
