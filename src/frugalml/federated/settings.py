"""A federated run's settings: what the server sends every client and writes as
RUN_DIR/federation.json. Imports only pydantic, so the CLI can build it before Flower loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from frugalml.config import Frozen


class Privacy(Frozen):
    """Client-level differential privacy (Flower's server-side fixed clipping)."""

    epsilon: float = Field(gt=0, description="Target epsilon over all rounds.")
    delta: float = Field(1e-5, gt=0, lt=1, description="Target delta.")
    clip: float = Field(1.0, gt=0, description="L2 norm each client's update is clipped to.")


DEFAULT_MAX_WEIGHT = 10_000  # a deployed server's guess at the largest party's examples
# Flower's 2^32 modulus holds the sum of the parties' quantized values
MODULUS = 2**32


class SecureAggregation(Frozen):
    """Flower's SecAgg+: the server learns only the weighted sum of the parties' states."""

    num_shares: float = Field(
        1.0,
        gt=0,
        description="Parties each one's keys are split among: a share of the round's "
        "parties (<= 1) or a count (>= 3).",
    )
    reconstruction_threshold: float = Field(
        0.6,
        gt=0,
        description="Shares that rebuild a dropped party's keys: a share of num_shares "
        "(<= 1) or a count; more is more private, less tolerates more dropouts.",
    )
    clipping_range: float = Field(
        8.0,
        gt=0,
        description="Each weighted value (examples / max_weight * value) must lie within "
        "+-this: it is quantized over that range (a party refuses a state that does not).",
    )
    quantization_range: int = Field(
        2**22, ge=2, description="Integer levels over [-clipping_range, clipping_range]."
    )
    max_weight: int | None = Field(
        None,
        ge=1,
        description="The largest party's example count (a party's weight is its examples / "
        "this); null: a simulation's largest partition, a deployed server's 10,000.",
    )

    def step(self, examples: int) -> float:
        """Quantization step on a value of a party holding `examples` rows."""
        weight = examples / (self.max_weight or DEFAULT_MAX_WEIGHT)
        return 2 * self.clipping_range / self.quantization_range / weight


class FederationSettings(Frozen):
    rung: str = Field("lora", description="frozen_probe (head only), lora or full.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="The rung's settings, as for `fit --set`."
    )
    labels: tuple[str, ...] = Field(min_length=2, description="Class names, in output order.")
    task: str = Field("text-classification", description="What the global model predicts.")
    rounds: int = Field(5, ge=1, description="Federated rounds (each: send, train, aggregate).")
    local_epochs: int = Field(1, ge=1, description="Epochs each client trains per round.")
    head_rounds: int = Field(
        0,
        ge=0,
        description="lora/full: rounds that first train only the head over the untouched "
        "encoder's embeddings (FedAvg of the head alone, cheap), before `rounds` rounds of "
        "the rung start from that head instead of a random one. Counted in every round, "
        "byte and cost figure.",
    )
    head_epochs: int = Field(
        5, ge=1, description="Epochs each client trains the head per warm-up round."
    )
    strategy: str = Field("fedavg", description="fedavg, fedprox, fedmedian, ... (Flower's).")
    solver: Literal["strategy", "lbfgs"] = Field(
        "strategy",
        description="strategy: average what parties train each round (Flower's --strategy); "
        "lbfgs (frozen_probe only): solve the head exactly, L-BFGS over the parties' summed "
        "loss and gradient, C chosen on their validation splits (federated/head_solve.py).",
    )
    clients: int = Field(ge=1, description="Clients expected.")
    min_clients: int = Field(ge=1, description="A round needs at least this many answers.")
    proximal_mu: float = Field(0.01, ge=0, description="FedProx's proximal term weight.")
    trim_beta: float = Field(0.2, ge=0, lt=0.5, description="FedTrimmedAvg's trimmed share.")
    malicious: int = Field(1, ge=0, description="Byzantine clients Krum must tolerate.")
    privacy: Privacy | None = Field(
        None, description="Differential privacy (target ε, δ, clipping); null: none."
    )
    secagg: SecureAggregation | None = Field(
        None, description="Secure aggregation (Flower's SecAgg+) of training rounds; null: none."
    )
    seed: int = Field(0, description="Seed for the initial model and every client's rounds.")
    round_timeout_s: float = Field(3600, gt=0, description="How long a round waits for replies.")
    data_fingerprint: str = Field("", description="sha256 of the union of the clients' data.")
    partition: str = Field("", description="How a simulation split the data.")
    attacks: dict[int, Literal["flip", "scale"]] = Field(
        default_factory=dict, description="Simulation only: Byzantine clients and their attack."
    )

    def check_solver(self) -> None:
        """The exact head solve sums plain gradients: one head, no DP noise, no attackers.
        A head warm-up precedes a fine-tuning rung, and its rounds are not DP-accounted."""
        if self.head_rounds:
            self._check_head_rounds()
        if self.secagg is not None:
            self._check_secagg(self.secagg)
        if self.solver != "lbfgs":
            return
        wrong = [
            text
            for bad, text in (
                (self.rung != "frozen_probe", f"--rung frozen_probe (got '{self.rung}')"),
                (self.privacy is not None, "no --dp-epsilon (its noise is for averaged models)"),
                (
                    bool(self.attacks),
                    "no Byzantine clients (a robust strategy needs --solver strategy)",
                ),
            )
            if bad
        ]
        if wrong:
            from frugalml.errors import ConfigError

            raise ConfigError("--solver lbfgs solves the frozen_probe head exactly", wrong)

    def _check_head_rounds(self) -> None:
        wrong = [
            text
            for bad, text in (
                (self.rung == "frozen_probe", "--rung lora or full (frozen_probe is all head)"),
                (
                    self.privacy is not None,
                    "no --dp-epsilon (the accountant plans for the rung's rounds alone)",
                ),
            )
            if bad
        ]
        if wrong:
            from frugalml.errors import ConfigError

            raise ConfigError("--head-rounds warms up a fine-tuning rung's head", wrong)

    def _check_secagg(self, secagg: SecureAggregation) -> None:
        """SecAgg+ reveals only a sum: refuse what needs each party's own update."""
        wrong = [text for bad, text in secagg_problems(self, secagg) if bad]
        if wrong:
            from frugalml.errors import ConfigError

            raise ConfigError(
                "--secagg lets the server see only the sum of the parties' updates", wrong
            )

    def sent(self) -> dict[str, Any]:
        """What each client needs to build the same job: rung, settings, labels, epochs."""
        return {
            "rung": self.rung,
            "options": self.options,
            "labels": list(self.labels),
            "local-epochs": self.local_epochs,
            "seed": self.seed,
        }


def global_round(config: Mapping[str, Any]) -> int:
    """The run's round number in a message's config: Flower counts each stage's rounds from
    1 (a head warm-up's, then the rung's), so a later stage sends the rounds before it as
    `round-offset`."""
    return int(config["server-round"]) + int(config.get("round-offset", 0))


# what SecAgg+'s sum can serve: FedProx aggregates as FedAvg does (its term is local)
SUMMED = ("fedavg", "fedprox")
NEEDS_EACH = {
    "fedmedian": "fedmedian takes each coordinate's median over the parties' updates",
    "fedtrimmedavg": "fedtrimmedavg sorts each coordinate's values over the parties to trim them",
    "krum": "krum scores each party's update by its distances to the others",
    "multikrum": "multikrum scores each party's update by its distances to the others",
}


def secagg_problems(
    settings: FederationSettings, secagg: SecureAggregation
) -> list[tuple[bool, str]]:
    """(bad, why and what to do instead) for each way `settings` cannot use SecAgg+."""
    shares = secagg.num_shares
    threshold = secagg.reconstruction_threshold
    count = shares if shares > 1 else shares * settings.clients
    return [
        (
            settings.strategy not in SUMMED,
            f"{NEEDS_EACH.get(settings.strategy, settings.strategy + ' is not a mean')}, "
            "which the server never sees: use --strategy fedavg or fedprox with --secagg, "
            "or drop --secagg for a robust strategy",
        ),
        (
            settings.privacy is not None,
            "--dp-epsilon clips each party's update on the server, which the server never "
            "sees: drop one of --dp-epsilon and --secagg",
        ),
        (
            settings.solver == "lbfgs",
            "--solver lbfgs exchanges gradients by query, not training rounds: use "
            "--solver strategy with --secagg",
        ),
        (
            settings.min_clients < 3,
            f"--min-clients {settings.min_clients}: with 2 parties each learns the other's "
            "update from the sum; use at least 3",
        ),
        (
            shares > 1 and not (float(shares).is_integer() and 3 <= shares <= settings.clients),
            f"--secagg-shares {shares:g}: a count must be a whole number from 3 to the "
            f"{settings.clients} clients, or a share of them (<= 1)",
        ),
        (
            threshold > 1 and not (float(threshold).is_integer() and 2 <= threshold < count),
            f"--secagg-threshold {threshold:g}: a count must be a whole number from 2 to "
            "below the number of shares, or a share of them (<= 1)",
        ),
        (
            settings.clients * secagg.quantization_range >= MODULUS,
            f"{settings.clients} parties times {secagg.quantization_range} levels overflow "
            "SecAgg+'s 2^32 modulus: lower the quantization range",
        ),
    ]
