"""The exact federated head solve (`--solver lbfgs`): the parties' summed loss and gradient
reach scikit-learn's centralised optimum, and the real ClientApp and ServerApp code run it
round by round (here over an in-process grid: Ray or a SuperLink would add minutes)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from frugalml.data.split import stratified_split
from frugalml.errors import ConfigError
from frugalml.federated.head_solve import confusion, loss_grad, macro_f1_of, solve
from frugalml.models.heads import LinearHead
from tests.conftest import demo_dataset

pytest.importorskip("flwr")


def _blobs(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return rng.normal(size=(k, d))[y] + 1.5 * rng.normal(size=(n, d)), y


def test_exact_solve_over_parties_reaches_the_centralised_optimum() -> None:
    k, d = 3, 8
    x, y = _blobs(300, d, k, seed=0)
    parties = np.array_split(np.argsort(y, kind="stable"), 3)  # label-skewed, as non-IID banks

    def query(op: str, rows: str, theta: np.ndarray) -> list[tuple[float, np.ndarray, int]]:
        if op == "confusion":
            return [(0.0, confusion(x[p], y[p], theta, k), len(p)) for p in parties]
        return [(*loss_grad(x[p], y[p], theta, k), len(p)) for p in parties]

    solved = solve(query, k, d, (0.1,), refit=False, tol=1e-6)
    central = LinearHead.fit(x, y, k, C=0.1, class_weight=None)
    w = solved.theta[: k * d].reshape(k, d)
    # softmax logits are defined up to a shift shared by all classes: compare centred ones
    ours = x @ w.T + solved.theta[k * d :]
    theirs = central.logits(x.astype(np.float32))
    np.testing.assert_allclose(
        ours - ours.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=2e-3
    )
    assert 5 < solved.rounds < 100  # tens of small rounds, not hundreds


def test_loss_grad_is_the_gradient_of_the_loss() -> None:
    x, y = _blobs(40, 5, 4, seed=1)
    theta = np.random.default_rng(2).normal(size=4 * 5 + 4)
    loss, grad = loss_grad(x, y, theta, 4)
    step = 1e-6 * np.eye(len(theta))
    numeric = [(loss_grad(x, y, theta + e, 4)[0] - loss) / 1e-6 for e in step]
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-3)
    assert macro_f1_of(np.diag([3.0, 2.0, 0.0])) == 1.0  # an absent class does not count


class InProcessGrid:
    """Flower's Grid for three parties answered here by the real ClientApp handler."""

    def __init__(self, partitions: Path, parties: int, drop_after: int | None = None) -> None:
        from flwr.app import Context, RecordDict

        self.partitions = partitions
        self.contexts = {
            n: Context(1, n, {"partition-id": n}, RecordDict(), {}) for n in range(parties)
        }
        self.calls, self.drop_after = 0, drop_after

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[object], *, timeout: float | None = None) -> list:
        from frugalml.federated.client_app import head_query

        self.calls += 1
        replies = []
        for m in messages:
            node = m.metadata.dst_node_id  # type: ignore[attr-defined]
            if self.drop_after is not None and self.calls > self.drop_after and node == 2:
                continue  # party 2 lost power
            replies.append(head_query(m, self.contexts[node], self.partitions))  # type: ignore[arg-type]
        return replies


@pytest.mark.parametrize("drop_after", [None, 3])
def test_solver_lbfgs_runs_through_the_client_and_server_apps(
    tiny_backbone: Path, tmp_path: Path, drop_after: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    # a ServerApp process's identity, which Flower's runtime sets before `main`
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    from frugalml.federated.partition import partition, write_client
    from frugalml.federated.server_app import Ledger, solve_head_on
    from frugalml.federated.settings import FederationSettings
    from frugalml.federated.task import HeadJob, build_job

    splits = stratified_split(demo_dataset(), seed=0)
    parts = partition(splits.train, "iid", 3, seed=0)
    for i, rows in enumerate(parts):
        write_client(tmp_path / f"client-{i}.json", splits.train.subset(rows))
    options = {"backbone": str(tiny_backbone), "max_length": 32, "Cs": [10.0]}
    settings = FederationSettings(
        rung="frozen_probe", options=options, labels=splits.train.labels, clients=3,
        min_clients=2, solver="lbfgs",
    )  # fmt: skip
    job = build_job("frozen_probe", options, splits.val, splits.val)
    assert isinstance(job, HeadJob)
    ledger = Ledger()
    ledger.at(0)  # the initial evaluation, as `federate` records it
    sent = {**settings.sent(), "options": json.dumps(options)}
    grid = InProcessGrid(tmp_path, 3, drop_after)
    theta = solve_head_on(grid, settings, ledger, job, sent)  # type: ignore[arg-type]

    job.load_theta(theta)
    # the refit on all the rows of the parties that answered is the centralised head on them
    kept = splits.train.subset(np.concatenate(parts if drop_after is None else parts[:2]))
    x = job.encoder.encode(kept.texts)
    central = LinearHead.fit(x, kept.y, len(kept.labels), C=10.0, class_weight=None)
    assert np.mean(job.logits(kept).argmax(1) == central.logits(x).argmax(1)) >= 0.98
    rounds = [ledger.rounds[r] for r in sorted(ledger.rounds)][1:]
    assert len(rounds) == grid.calls  # one round per query
    assert all(r.bytes_up > 0 and r.bytes_down > 0 for r in rounds)
    # a party sends one head-sized vector up per round (float64): far less than a model
    k, d = job.model.head.weight.shape
    assert rounds[-1].bytes_up <= 1.1 * 3 * 8 * (k * d + k)  # with its array headers
    if drop_after is None:
        assert all(sorted(r.answered) == [0, 1, 2] for r in rounds)
    else:  # the solve restarted with the two that answer, and finished
        assert sorted(rounds[drop_after].answered) == sorted(rounds[-1].answered) == [0, 1]


def test_solver_lbfgs_refuses_what_it_cannot_solve() -> None:
    from frugalml.federated.settings import FederationSettings, Privacy

    settings = FederationSettings(
        rung="lora", labels=("a", "b"), clients=3, min_clients=3, solver="lbfgs",
        privacy=Privacy(epsilon=8), attacks={0: "scale"},
    )  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        settings.check_solver()
    assert len(raised.value.problems) == 3
    assert "--rung frozen_probe (got 'lora')" in raised.value.problems[0]
