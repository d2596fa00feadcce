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
