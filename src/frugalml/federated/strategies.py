"""Flower's own aggregation strategies by name, and its DP wrapper with a noise multiplier
chosen for a target (epsilon, delta): nothing here aggregates or adds noise itself."""

from __future__ import annotations

import difflib
from typing import Any

from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from frugalml.errors import ConfigError

STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
}


def make_strategy(
    name: str,
    *,
    clients: int,
    min_clients: int,
    proximal_mu: float = 0.01,
    trim_beta: float = 0.2,
    malicious: int = 1,
    evaluate_on_clients: bool = False,
    weighted_by_key: str = "num-examples",
) -> FedAvg:
    """Flower's strategy `name`, sampling every available client each round (at least
    `min_clients` of the `clients`): a round completes with whoever answers."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(name, STRATEGIES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown --strategy '{name}'{hint}", [f"known: {', '.join(STRATEGIES)}"])
    kwargs: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0 if evaluate_on_clients else 0.0,
        "min_train_nodes": min_clients,
        "min_evaluate_nodes": min_clients if evaluate_on_clients else 0,
        "min_available_nodes": min_clients,
        "weighted_by_key": weighted_by_key,
    }
    if name == "fedprox":
        kwargs["proximal_mu"] = proximal_mu
    elif name == "fedtrimmedavg":
        kwargs["beta"] = trim_beta
    elif name in ("krum", "multikrum"):
        kwargs["num_malicious_nodes"] = malicious
    if name == "multikrum":
        kwargs["num_nodes_to_select"] = max(1, clients - malicious)
    return STRATEGIES[name](**kwargs)


def with_privacy(
    strategy: FedAvg,
    *,
    epsilon: float,
    delta: float,
    rounds: int,
    clients: int,
    clip: float,
) -> DifferentialPrivacyServerSideFixedClipping:
    """Wrap `strategy` in Flower's server-side fixed-clipping DP (client-level), its noise
    multiplier the smallest that keeps `rounds` releases within (epsilon, delta) by Flower's
    RDP accountant; the same accountant then reports epsilon as rounds go."""
    if type(strategy).aggregate_train is not FedAvg.aggregate_train:
        raise ConfigError(
            f"differential privacy needs a mean-based strategy; {type(strategy).__name__} "
            "aggregates otherwise",
            ["use --strategy fedavg or fedprox with --dp-epsilon"],
        )
    sigma = noise_multiplier(epsilon, delta, rounds, clients)
    return DifferentialPrivacyServerSideFixedClipping(
        strategy,
        noise_multiplier=sigma,
        clipping_norm=clip,
        num_sampled_clients=clients,
        accountant=accountant(delta, clients),
    )


def accountant(delta: float, clients: int) -> RdpAccountant:
    """Flower's RDP accountant for client-level DP, every client in every round."""
    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )


def epsilon_after(sigma: float, delta: float, rounds: int, clients: int) -> float:
    """Epsilon spent after `rounds` releases with noise multiplier `sigma`."""
    spent = accountant(delta, clients)
    spent.compose(GaussianPrivacyEvent(sigma, clients, clients), count=rounds)
    return spent.get_epsilon(delta)


def noise_multiplier(epsilon: float, delta: float, rounds: int, clients: int) -> float:
    """The smallest noise multiplier (to 0.1%) whose `rounds` releases stay within epsilon."""
    if not (epsilon > 0 and 0 < delta < 1 and rounds >= 1):
        raise ConfigError(
            f"DP needs epsilon > 0 and 0 < delta < 1; got epsilon={epsilon}, delta={delta}"
        )
    low, high = 1e-3, 1e3
    while high / low > 1.001:
        mid = (low * high) ** 0.5
        low, high = (
            (mid, high) if epsilon_after(mid, delta, rounds, clients) > epsilon else (low, mid)
        )
    return high


def spent_epsilon(strategy: Strategy) -> float | None:
    """Epsilon the DP wrapper's accountant has recorded so far (None without DP)."""
    spent = getattr(strategy, "accountant", None)
    return None if spent is None else float(spent.get_privacy_spent().epsilon)
