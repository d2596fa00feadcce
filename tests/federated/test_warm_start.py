"""`--head-rounds`: a LoRA federation whose first rounds average the head alone, trained over
the untouched encoder's embeddings, then LoRA rounds start from that head. The real
ServerApp (`federate`, Flower's FedAvg) and ClientApp (`local_round`) run here over an
in-process grid: Ray or a SuperLink would add minutes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from frugalml.data.split import stratified_split
from frugalml.errors import ConfigError
from tests.conftest import demo_dataset

pytest.importorskip("flwr")
pytest.importorskip("peft")


class InProcessGrid:
    """Flower's Grid for `parties` parties, each answered here by the real ClientApp code."""

    def __init__(self, partitions: Path, parties: int) -> None:
        from flwr.app import Context, RecordDict

        self.partitions = partitions
        self.contexts = {
            n: Context(1, n, {"partition-id": n}, RecordDict(), {}) for n in range(parties)
        }
        self.sent: list[dict[str, torch.Tensor]] = []  # the arrays each round sent

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[object], *, timeout: float | None = None) -> list:
        from frugalml.federated.client_app import local_round

        messages = list(messages)
        if messages:
            first = messages[0].content["arrays"]  # type: ignore[attr-defined]
            self.sent.append(first.to_torch_state_dict())
        return [
            local_round(m, self.contexts[m.metadata.dst_node_id], self.partitions, {})  # type: ignore[attr-defined]
            for m in messages
        ]


@pytest.mark.timeout(300)
def test_head_rounds_warm_up_the_head_then_lora_rounds_start_from_it(
    tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    # a ServerApp process's identity, which Flower's runtime sets before `main`
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    from frugalml.federated.partition import partition, write_client
    from frugalml.federated.server_app import federate
    from frugalml.federated.settings import FederationSettings

    splits = stratified_split(demo_dataset(), seed=0)
    (tmp_path / "clients").mkdir()
    (tmp_path / "central").mkdir()
    for i, rows in enumerate(partition(splits.train, "dirichlet:1.0", 3, seed=0)):
        write_client(tmp_path / "clients" / f"client-{i}.json", splits.train.subset(rows))
    write_client(tmp_path / "central" / "val.json", splits.val)
    write_client(tmp_path / "central" / "test.json", splits.test)
    options = {"backbone": str(tiny_backbone), "max_length": 32}
    settings = FederationSettings(
        rung="lora", options=options, labels=splits.train.labels, clients=3, min_clients=3,
        rounds=1, head_rounds=2, head_epochs=3,
    )  # fmt: skip
    grid = InProcessGrid(tmp_path / "clients", 3)
    federate(grid, settings, tmp_path)  # type: ignore[arg-type]

    # the warm-up rounds sent the head alone; the LoRA round the adapters and that head
    assert [sorted(s) for s in grid.sent[:2]] == [["head.bias", "head.weight"]] * 2
    assert any("lora_" in name for name in grid.sent[2])
    # the LoRA round started from the warmed-up head, not the random one
    assert not torch.equal(grid.sent[2]["head.weight"], grid.sent[0]["head.weight"])
    report = json.loads((tmp_path / "report.json").read_text())
    rounds = report["rounds"]
    assert [(r["round"], r["stage"]) for r in rounds] == [
        (0, ""), (1, "head"), (2, "head"), (3, "lora"),
    ]  # fmt: skip
    for r in rounds[1:]:
        assert sorted(r["answered"]) == [0, 1, 2] and r["bytes_down"] == r["bytes_up"] > 0
        assert r["client_cpu_s"] > 0 and r["val_accuracy"] is not None
    head, lora = rounds[1]["bytes_up"], rounds[3]["bytes_up"]
    assert head < lora  # the head alone is a part of what a LoRA round moves
    assert report["bytes_total"] == sum(r["bytes_down"] + r["bytes_up"] for r in rounds)
    # every party's cost card counts its warm-up rounds too
    costs = json.loads((tmp_path / "costs.json").read_text())
    per_round = sum(r["client_cpu_s"] for r in rounds)
    assert sum(c["cpu_s"] for c in costs["clients"].values()) == pytest.approx(per_round)
    assert "| 1 | head |" in (tmp_path / "report.md").read_text()


def test_head_rounds_refuse_what_they_cannot_warm_up() -> None:
    from frugalml.federated.settings import FederationSettings, Privacy

    settings = FederationSettings(
        rung="frozen_probe", labels=("a", "b"), clients=3, min_clients=3, head_rounds=2,
        privacy=Privacy(epsilon=8),
    )  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        settings.check_solver()
    assert len(raised.value.problems) == 2


def test_a_warm_up_head_fits_the_lora_model_it_joins(tiny_backbone: Path) -> None:
    """The head trained over the encoder's vectors scores the same inside the LoRA model
    (adapters at zero, eval mode): the vectors are the model's own pooling."""
    from frugalml.costs import CostMeter
    from frugalml.federated.task import FineTuneJob, build_job

    data = demo_dataset()
    job = build_job("lora", {"backbone": str(tiny_backbone), "max_length": 32}, data, data)
    assert isinstance(job, FineTuneJob)
    before = {k: v.clone() for k, v in job.state().items()}
    job.train_head_round(2, 0, CostMeter())
    after = job.state()
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("head."))
    assert job.warm is not None
    with torch.inference_mode():
        over_vectors = job.warm.model(job.warm.x).numpy()
    np.testing.assert_allclose(job.logits(data), over_vectors, atol=1e-4)
