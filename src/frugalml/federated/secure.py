"""Secure aggregation with Flower's SecAgg+: the server learns the weighted sum of the
parties' trainable states and nothing of any one of them.

Flower 1.42 ships SecAgg+ for its legacy workflow API only (`SecAggPlusWorkflow` on the
server, `secaggplus_mod` on the client), not for the Message-API strategies frugalml runs.
`SecureGrid` bridges the two without any cryptography of ours: it stands between a
Message-API strategy and the (metered) grid, and turns each training round the strategy
sends into Flower's four SecAgg+ exchanges (keys, encrypted key shares, masked quantized
states, unmasking shares), run by Flower's own workflow stages. Every party's reply is then
handed to the strategy carrying the secure weighted mean in place of its own state, so a
mean-based strategy (FedAvg, FedProx) aggregates to that mean. On the client, `secure_mod`
runs Flower's `secaggplus_mod` around the ordinary `train` handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitIns, FitRes, Parameters, Status, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid

from frugalml.errors import FrugalError
from frugalml.federated.settings import DEFAULT_MAX_WEIGHT, SecureAggregation

NAMES = "frugalml-array-names"  # the state's names, which legacy parameters lack
WEIGHT = "num-examples"  # what weights a party's state in the mean


class SecureAggregationError(FrugalError, ValueError):
    """A party's state does not fit SecAgg+'s quantization range."""


def flower_number(x: float) -> int | float:
    """Flower reads an int as a count and a float as a share of the round's parties."""
    return int(x) if x > 1 and float(x).is_integer() else float(x)


def workflow(settings: SecureAggregation, timeout: float) -> SecAggPlusWorkflow:
    return SecAggPlusWorkflow(
        num_shares=flower_number(settings.num_shares),
        reconstruction_threshold=flower_number(settings.reconstruction_threshold),
        max_weight=float(settings.max_weight or DEFAULT_MAX_WEIGHT),
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
        timeout=timeout,
    )


class SecureGrid:
    """A Grid for a Message-API strategy whose training rounds go through SecAgg+.
    `grid` carries the protocol's real messages (meter it); `on_round` hears each round's
    config first, as the protocol's messages carry none."""

    def __init__(
        self,
        grid: Grid,
        settings: SecureAggregation,
        *,
        timeout: float,
        on_round: Callable[[ConfigRecord], None] = lambda _: None,
    ) -> None:
        self._grid = grid
        self._workflow = workflow(settings, timeout)
        self._on_round = on_round

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        sent = list(messages)
        if not sent or sent[0].metadata.message_type != MessageType.TRAIN:
            return self._grid.send_and_receive(sent, timeout=timeout)
        config = cast(ConfigRecord, sent[0].content["config"])
        self._on_round(config)
        arrays = cast(ArrayRecord, sent[0].content["arrays"])
        legacy = _LegacyRound(sent, self._grid)
        context = LegacyContext(
            Context(0, 0, {}, RecordDict(), {}),
            strategy=legacy,  # type: ignore[arg-type]  # the two calls the workflow makes
        )
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: int(config["server-round"])}  # type: ignore[arg-type]
        )
        context.state.array_records[MAIN_PARAMS_RECORD] = arrays
        self._workflow(self._grid, context)
        if legacy.mean is None:
            return []  # too few parties finished the protocol: the strategy keeps its state
        mean = _named(legacy.mean, arrays)
        return [
            Message(RecordDict({"arrays": mean, "metrics": metrics}), reply_to=legacy.by_node[n])
            for n, metrics in legacy.metrics
        ]


class _LegacyRound:
    """What `SecAggPlusWorkflow` asks of a legacy strategy, for one round's messages:
    whom to send what (`configure_fit`), and the unmasked mean (`aggregate_fit`)."""

    def __init__(self, sent: list[Message], grid: Grid) -> None:
        self.by_node = {m.metadata.dst_node_id: m for m in sent}
        self._grid = grid
        self.mean: Parameters | None = None
        self.metrics: list[tuple[int, Any]] = []

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: Any
    ) -> list[tuple[GridClientProxy, FitIns]]:
        def fit_ins(m: Message) -> FitIns:
            arrays = cast(ArrayRecord, m.content["arrays"])
            config = dict(cast(ConfigRecord, m.content["config"]))
            config[NAMES] = list(arrays.keys())
            return FitIns(compat.arrayrecord_to_parameters(arrays, keep_input=True), config)  # type: ignore[arg-type]

        return [
            (GridClientProxy(n, self._grid, m.metadata.run_id), fit_ins(m))
            for n, m in self.by_node.items()
        ]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[GridClientProxy, FitRes]], failures: Any
    ) -> tuple[Parameters | None, dict[str, Any]]:
        if results:  # the workflow put the unmasked mean in every result
            self.mean = results[0][1].parameters
            from flwr.app import MetricRecord

            self.metrics = [
                (proxy.node_id, MetricRecord(res.metrics))  # type: ignore[arg-type]
                for proxy, res in results
            ]
        return self.mean, {}


def _named(mean: Parameters, like: ArrayRecord) -> ArrayRecord:
    """The mean as the state it averages: its names, shapes and dtypes."""
    values = parameters_to_ndarrays(mean)
    return ArrayRecord(
        {
            name: Array(np.asarray(v, dtype=like[name].numpy().dtype).reshape(like[name].shape))
            for name, v in zip(like.keys(), values, strict=True)
        }
    )


def secure_mod(
    msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """A client mod: a SecAgg+ message goes through Flower's `secaggplus_mod`, whose
    training stage calls the ordinary `train` handler through `_plain_round`; any other
    message passes untouched (the server decides whether a run is secure)."""
    if msg.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in msg.content:
        return call_next(msg, ctxt)
    return secaggplus_mod(msg, ctxt, lambda m, c: _plain_round(m, c, call_next))


def _plain_round(
    msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """SecAgg+'s training stage speaks the legacy FitIns/FitRes records; the handler, the
    Message API's "arrays"/"config"/"metrics". Translate both ways; the state goes back
    only in `fitres.parameters`, which `secaggplus_mod` masks and then empties."""
    config = msg.content.config_records["fitins.config"]
    legacy = msg.content.array_records["fitins.parameters"]
    names = [str(x) for x in cast(list[str], config[NAMES])]
    arrays = ArrayRecord({name: legacy[str(i)] for i, name in enumerate(names)})
    plain = {k: v for k, v in config.items() if k != NAMES}
    msg.content = RecordDict({"arrays": arrays, "config": ConfigRecord(plain)})
    reply = call_next(msg, ctxt)
    state = cast(ArrayRecord, reply.content["arrays"])
    metrics = reply.content.metric_records["metrics"]
    weight = int(cast(int, metrics[WEIGHT]))
    _check_range(state, names, weight, ctxt, msg)
    ordered = ArrayRecord({name: state[name] for name in names})
    fitres = FitRes(
        Status(Code.OK, "trained"),
        compat.arrayrecord_to_parameters(ordered, keep_input=True),
        weight,
        dict(metrics),  # type: ignore[arg-type]  # scalars: what the server books
    )
    content = compat.fitres_to_recorddict(fitres, keep_input=True)
    content.metric_records["metrics"] = metrics
    return Message(content, reply_to=msg)


def _check_range(
    state: ArrayRecord, names: list[str], weight: int, ctxt: Context, msg: Message
) -> None:
    """SecAgg+ clips each weighted value (weight / max_weight * value) to the clipping
    range before quantizing: say so rather than let the mean silently differ."""
    setup = ctxt.state.config_records.get("secaggplus_state")
    if setup is None:
        return
    clip = float(cast(float, setup["clipping_range"]))
    ratio = weight / float(cast(float, setup["max_weight"]))
    largest = max(float(np.abs(state[name].numpy()).max(initial=0.0)) for name in names)
    if largest * ratio > clip:
        raise SecureAggregationError(
            f"a value of this party's state ({largest:.3g}) times its weight "
            f"({weight} / max_weight) exceeds the SecAgg+ clipping range {clip}",
            ["raise --secagg-clip, or --secagg-max-weight to this party's example count"],
        )
