"""A server restarted from its last round's saved state: a LoRA federation (head warm-up
rounds, then LoRA rounds) whose server stops after a round and is resumed ends like the run
that never stopped: the same rounds, bytes, clients and cost cards, the same model. The real
ServerApp (`federate`) and ClientApp (`local_round`) run over an in-process grid, as in
test_warm_start.py (Ray or a SuperLink would add minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from frugalml.data.split import stratified_split
from frugalml.federated.settings import global_round
from tests.conftest import demo_dataset
from tests.federated.test_warm_start import InProcessGrid

pytest.importorskip("flwr")
pytest.importorskip("peft")


class ServerStoppedError(Exception):
    """The server process dying, as far as `federate` can tell."""


class StoppingGrid(InProcessGrid):
    """The in-process grid, failing the server when round `stop_at`'s messages go out."""

    def __init__(self, partitions: Path, parties: int, stop_at: int) -> None:
        super().__init__(partitions, parties)
        self.stop_at = stop_at

    def send_and_receive(self, messages: Iterable[object], *, timeout: float | None = None) -> list:
        messages = list(messages)
        if messages and global_round(messages[0].content["config"]) == self.stop_at:  # type: ignore[attr-defined]
            raise ServerStoppedError(f"round {self.stop_at}")
        return super().send_and_receive(messages, timeout=timeout)


def _run_dir(folder: Path) -> Path:
    from frugalml.federated.partition import partition, write_client

    splits = stratified_split(demo_dataset(), seed=0)
    (folder / "clients").mkdir(parents=True)
    (folder / "central").mkdir()
    for i, rows in enumerate(partition(splits.train, "dirichlet:1.0", 3, seed=0)):
        write_client(folder / "clients" / f"client-{i}.json", splits.train.subset(rows))
    write_client(folder / "central" / "val.json", splits.val)
    write_client(folder / "central" / "test.json", splits.test)
    return folder


@pytest.fixture
def server_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ServerApp process's identity, which Flower's runtime sets before `main`."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _settings(tiny_backbone: Path, **changes: object) -> object:
    from frugalml.federated.settings import FederationSettings

    labels = stratified_split(demo_dataset(), seed=0).train.labels
    options = {"backbone": str(tiny_backbone), "max_length": 32}
    base = {
        "rung": "lora", "options": options, "labels": labels, "clients": 3, "min_clients": 3,
        "rounds": 2, "head_rounds": 2, "head_epochs": 2,
    }  # fmt: skip
    return FederationSettings(**{**base, **changes})


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop_at", [2, 4], ids=["in-the-warm-up", "in-the-lora-rounds"])
def test_a_resumed_server_ends_like_the_run_that_never_stopped(
    tiny_backbone: Path, tmp_path: Path, server_identity: None, stop_at: int
) -> None:
    import frugalml
    from frugalml.federated.server_app import federate

    settings = _settings(tiny_backbone)
    whole = _run_dir(tmp_path / "whole")
    federate(InProcessGrid(whole / "clients", 3), settings, whole)  # type: ignore[arg-type]

    stopped = _run_dir(tmp_path / "stopped")
    with pytest.raises(ServerStoppedError):
        federate(StoppingGrid(stopped / "clients", 3, stop_at), settings, stopped)  # type: ignore[arg-type]
    saved = json.loads((stopped / "checkpoint" / "checkpoint.json").read_text())
    assert saved["round"] == stop_at - 1  # the last completed round
    assert [p.name for p in (stopped / "checkpoint").glob("*.safetensors")] == [
        f"round-{stop_at - 1}.safetensors"
    ]
    assert not (stopped / "report.json").exists()
    resumed_grid = InProcessGrid(stopped / "clients", 3)
    federate(resumed_grid, settings, stopped, resume=True)  # type: ignore[arg-type]
    # the restarted server sent only the rounds left
    assert len(resumed_grid.sent) == 4 - (stop_at - 1)

    a = json.loads((whole / "report.json").read_text())
    b = json.loads((stopped / "report.json").read_text())
    assert [r["round"] for r in b["rounds"]] == [0, 1, 2, 3, 4]
    for x, y in zip(a["rounds"], b["rounds"], strict=True):
        same = ("round", "stage", "bytes_down", "bytes_up", "failed")
        assert {k: x[k] for k in same} == {k: y[k] for k in same}
        assert sorted(x["answered"]) == sorted(y["answered"])
        assert y["val_accuracy"] == pytest.approx(x["val_accuracy"], abs=1e-6)
    assert b["bytes_total"] == a["bytes_total"]
    # the clients' cost cards continue: every round's spend, before and after the restart
    costs = json.loads((stopped / "costs.json").read_text())
    assert sorted(costs["clients"]) == ["0", "1", "2"]
    per_round = sum(r["client_cpu_s"] for r in b["rounds"])
    assert sum(c["cpu_s"] for c in costs["clients"].values()) == pytest.approx(per_round)
    assert "before a restart" in costs["server"]["energy_source"]  # both server processes
    # the same global model
    texts = demo_dataset().texts[:20]
    np.testing.assert_allclose(
        frugalml.load(stopped / "bundle").predict_proba(texts),
        frugalml.load(whole / "bundle").predict_proba(texts),
        atol=1e-5,  # equal but for the order Flower sums the replies in
    )


def test_resuming_with_other_settings_is_refused(
    tiny_backbone: Path, tmp_path: Path, server_identity: None
) -> None:
    from frugalml.federated.checkpoint import ResumeError
    from frugalml.federated.server_app import federate

    settings = _settings(tiny_backbone, head_rounds=0, rounds=2)
    run_dir = _run_dir(tmp_path / "run")
    with pytest.raises(ResumeError, match="holds no saved round"):
        federate(InProcessGrid(run_dir / "clients", 3), settings, run_dir, resume=True)  # type: ignore[arg-type]
    with pytest.raises(ServerStoppedError):
        federate(StoppingGrid(run_dir / "clients", 3, 2), settings, run_dir)  # type: ignore[arg-type]

    other = _settings(
        tiny_backbone, head_rounds=0, rounds=2, rung="full", strategy="fedmedian",
        labels=tuple(reversed(settings.labels)),  # type: ignore[attr-defined]
    )  # fmt: skip
    with pytest.raises(ResumeError) as raised:
        federate(InProcessGrid(run_dir / "clients", 3), other, run_dir, resume=True)  # type: ignore[arg-type]
    problems = "\n".join(raised.value.problems)
    for key in ("labels:", "rung: saved 'lora', now 'full'", "strategy: saved 'fedavg'"):
        assert key in problems
    # a longer timeout is no other run
    same = _settings(tiny_backbone, head_rounds=0, rounds=2, round_timeout_s=60)
    state = next((run_dir / "checkpoint").glob("*.safetensors"))
    state.write_bytes(state.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ResumeError, match="does not match its checksum"):
        federate(InProcessGrid(run_dir / "clients", 3), same, run_dir, resume=True)  # type: ignore[arg-type]


def test_federate_server_resume_refuses_a_mismatch_before_starting(tmp_path: Path) -> None:
    """`federate server --resume`: the saved round is checked before a SuperLink starts."""
    import torch

    from frugalml.federated.checkpoint import Checkpoint, save
    from frugalml.federated.deployment import make_certificates, make_client_key
    from frugalml.federated.server_app import Ledger
    from frugalml.federated.settings import FederationSettings

    keys = tmp_path / "keys"
    make_certificates(keys)
    _, public = make_client_key(keys, "client-0")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = FederationSettings(rung="lora", labels=("a", "b"), clients=1, min_clients=1)
    state = {"head.weight": torch.zeros(2, 4)}
    save(run_dir, Checkpoint(1, state, Ledger(), []), saved)

    fed = [sys.executable, "-m", "frugalml", "federate", "server", "--certs", str(keys)]
    fed += ["--allow", str(public), "--port", "1"]  # no SuperLink may start: port 1 would fail
    both = [*fed, "--out", str(tmp_path / "new"), "--resume", str(run_dir)]
    other = [*fed, "--resume", str(run_dir), "--rung", "full"]
    empty = [*fed, "--resume", str(tmp_path / "keys")]
    for cmd, says in (
        (both, "not both"),
        (other, "rung: saved 'lora', now 'full'"),
        (empty, "holds no saved round to resume from"),
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr[-2000:]
        assert says in " ".join(done.stderr.split()), done.stderr[-2000:]
    assert not (run_dir / ".flower").exists()
