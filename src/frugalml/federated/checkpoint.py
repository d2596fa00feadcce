"""A federated run's last completed round, saved after every round, so that a restarted
server continues from it (`frugalml federate server --resume RUN_DIR`) instead of starting
over: the global trainable state (safetensors, never a pickle), the round, the rounds'
metrics, bytes and client cost cards so far, the settings it ran with and the DP
accountant's state. Written atomically: each file is written whole, then renamed into
place; `RUN_DIR/checkpoint/checkpoint.json` is renamed last and names the state it goes with,
so a crash mid-save leaves the previous round's checkpoint intact."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugalml.costs import CostCard
from frugalml.errors import FrugalError
from frugalml.federated.settings import FederationSettings

if TYPE_CHECKING:
    import torch

    from frugalml.federated.server_app import Ledger

FOLDER = "checkpoint"
INDEX = "checkpoint.json"
# settings that may change between a run and its resumption: they do not change the result
OPERATIONAL = frozenset({"round_timeout_s"})


class ResumeError(FrugalError, ValueError):
    """A run folder cannot be resumed with this configuration."""


@dataclass
class Session:
    """What this server process has spent so far: a restarted run's earlier processes
    cannot hand over their cost meter, so each checkpoint records its process's spend."""

    wall0: float = field(default_factory=time.perf_counter)
    times0: os.times_result = field(default_factory=os.times)

    def card(self) -> CostCard:
        """Wall and CPU seconds and peak memory so far; energy and money are not measured
        for a server process that did not end (its meter never closed)."""
        now = os.times()
        return CostCard(
            wall_s=time.perf_counter() - self.wall0,
            cpu_s=sum(now[:2]) - sum(self.times0[:2]),
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            energy_kwh=0.0,
            energy_source="not measured (a server process before a restart)",
            usd=0.0,
            price_basis="not measured (a server process before a restart)",
        )


@dataclass
class Checkpoint:
    """The run as it stood after round `round` (the run's numbering: warm-up rounds count)."""

    round: int
    state: dict[str, torch.Tensor]  # the global trainable state (the head alone in a warm-up)
    ledger: Ledger
    server_cards: list[CostCard]  # earlier server processes' spend, one card each
    accountant: dict[str, Any] | None = None  # Flower's RDP accountant's `state_dict()`


def save(
    run_dir: Path,
    checkpoint: Checkpoint,
    settings: FederationSettings,
) -> None:
    """Write `checkpoint` into `run_dir/checkpoint/`, atomically, then drop older states."""
    from safetensors.torch import save_file

    folder = run_dir / FOLDER
    folder.mkdir(exist_ok=True)
    name = f"round-{checkpoint.round}.safetensors"
    tensors = {k: v.detach().contiguous().cpu() for k, v in checkpoint.state.items()}
    _atomic(folder / name, lambda tmp: save_file(tensors, str(tmp)))
    index = {
        "round": checkpoint.round,
        "state": name,
        "sha256": _sha256(folder / name),
        "settings": settings.model_dump(mode="json"),
        "rounds": [asdict(r) for _, r in sorted(checkpoint.ledger.rounds.items())],
        "client_cards": {
            str(c): [card.to_dict() for card in cards]
            for c, cards in checkpoint.ledger.client_cards.items()
        },
        "server_cards": [card.to_dict() for card in checkpoint.server_cards],
        "accountant": checkpoint.accountant,
    }
    text = json.dumps(index, indent=2)
    _atomic(folder / INDEX, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    for old in folder.glob("round-*.safetensors"):
        if old.name != name:
            old.unlink()


def load(run_dir: Path, settings: FederationSettings) -> Checkpoint:
    """The last completed round saved in `run_dir`; refuses one saved with other settings."""
    from safetensors.torch import load_file

    from frugalml.federated.server_app import Ledger, Round

    path = run_dir / FOLDER / INDEX
    index = read_index(run_dir)
    _check_settings(run_dir, index["settings"], settings)
    state_path = path.parent / str(index["state"])
    if not state_path.is_file() or _sha256(state_path) != index["sha256"]:
        raise ResumeError(
            f"{state_path} is missing or does not match its checksum in {path}",
            ["the run folder was changed after the server stopped; start a new run"],
        )
    ledger = Ledger(
        rounds={int(r["round"]): Round(**r) for r in index["rounds"]},
        client_cards={
            int(c): [CostCard.from_dict(card) for card in cards]
            for c, cards in index["client_cards"].items()
        },
    )
    return Checkpoint(
        round=int(index["round"]),
        state=load_file(str(state_path)),
        ledger=ledger,
        server_cards=[CostCard.from_dict(card) for card in index["server_cards"]],
        accountant=index["accountant"],
    )


def read_index(run_dir: Path) -> dict[str, Any]:
    """`run_dir`'s checkpoint.json: the last saved round, its settings and ledger."""
    path = run_dir / FOLDER / INDEX
    if not path.is_file():
        raise ResumeError(
            f"{run_dir} holds no saved round to resume from (no {FOLDER}/{INDEX})",
            ["a federated run saves one after each round; start a new run with --out"],
        )
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _check_settings(run_dir: Path, saved: dict[str, Any], settings: FederationSettings) -> None:
    """Every setting that shapes the model or its rounds must be as saved: all differences
    at once, each with both values."""
    if settings.solver == "lbfgs":
        raise ResumeError(
            "--solver lbfgs cannot be resumed: the exact solve is one optimisation, not rounds",
            ["run it again without --resume (it is the cheapest way to train the head)"],
        )
    now = json.loads(settings.model_dump_json())  # as saved: JSON keys are strings
    differ = [
        f"{key}: saved {saved.get(key)!r}, now {now.get(key)!r}"
        for key in sorted(set(now) | set(saved))
        if key not in OPERATIONAL and saved.get(key) != now.get(key)
    ]
    if differ:
        raise ResumeError(
            f"{run_dir} was run with other settings than these; it cannot be resumed with them",
            [*differ, "resume with the run's own settings (see its checkpoint/checkpoint.json)"],
        )


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename `tmp` over `path`: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
