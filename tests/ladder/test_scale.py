"""Torch rungs under a real torchrun (2 gloo ranks on 127.0.0.1): the same weights as one
process at twice the batch, honest cost cards, and a restart after a rank is SIGKILLed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
import torch.distributed as dist

from frugalml.config import Budget, Scale
from frugalml.costs import CostMeter, Prices
from frugalml.data.split import Splits
from frugalml.ladder.scale import FAULT_ENV, fit_rung
from frugalml.strategies import get_strategy
from tests.conftest import build_tiny_backbone, demo_dataset

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

BATCH = 16  # one process's batch; each of 2 ranks takes half of it
N_TRAIN = 160  # whole batches: both halves of every batch are the same size


@pytest.fixture(scope="module")
def still_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with its dropout off: only then do batch splits give the same weights."""
    import re

    words = {w for text in demo_dataset().texts for w in re.findall(r"[a-z']+", text.lower())}
    folder = build_tiny_backbone(tmp_path_factory.mktemp("still-bert"), sorted(words))
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def full(backbone: Path, batch_size: int, epochs: int = 1) -> Any:
    train = {"epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "head_lr": 1e-2}
    options = {"backbone": str(backbone), "max_length": 32, "head_dropout": 0.0, "train": train}
    return get_strategy("full").build(**options)


def weights(predictor: Any) -> dict[str, np.ndarray]:
    state = {k: v.detach().numpy() for k, v in predictor.encoder.model.state_dict().items()}
    return {**state, "head.coef": predictor.head.coef, "head.intercept": predictor.head.intercept}


@pytest.fixture(scope="module")
def data(demo_splits: Splits) -> Splits:
    return Splits(demo_splits.train.subset(np.arange(N_TRAIN)), demo_splits.val, demo_splits.test)


def test_two_ranks_at_half_the_batch_end_with_one_process_weights(
    still_backbone: Path, data: Splits, tmp_path: Path
) -> None:
    with CostMeter() as one_meter:
        one = full(still_backbone, BATCH).fit(
            data.train, data.val, budget=Budget(), meter=one_meter, workdir=tmp_path / "one"
        )
    with CostMeter() as meter:
        two = fit_rung(
            "full",
            full(still_backbone, BATCH // 2),
            data.train,
            data.val,
            budget=Budget(),
            meter=meter,
            workdir=tmp_path / "two",
            scale=Scale(nproc=2),
            prices=Prices(),
        )
    expected, got = weights(one), weights(two)
    assert expected.keys() == got.keys()
    worst = max(float(np.abs(expected[k] - got[k]).max()) for k in expected)
    assert worst <= 1e-5, worst
    print(f"max |delta| = {worst:.2e}")
    untrained = full(still_backbone, BATCH).fine_tuning(data.train, data.val).model
    assert not np.allclose(untrained.head.weight.detach().numpy(), got["head.coef"], atol=1e-3)
    card = meter.card
    assert card.processes == 2 and card.extra["nodes"] == 1 and card.extra["restarts"] == 0
    # Each rank held a model: the card's peak is the launcher's plus both ranks', more than
    # one process alone needed; the ranks' CPU is inside the launcher's (it waited for them).
    assert card.peak_rss_mb > one_meter.card.peak_rss_mb
    assert card.cpu_s >= card.extra["ranks_cpu_s"] > 0
    # Both ranks' FLOPs are counted; half batches pad less, so a little fewer than one's.
    assert 0.8 * one_meter.card.flops < card.flops <= one_meter.card.flops


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_is_restarted_and_resumes_from_the_last_epoch(
    tiny_backbone: Path, data: Splits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, "kill:1:1:2")  # rank 1, epoch 1, its third batch; once
    strategy = get_strategy("full").build(
        backbone=str(tiny_backbone),
        max_length=32,
        train={"epochs": 3, "batch_size": 8, "lr": 1e-3, "patience": 5},
    )
    with CostMeter() as meter:
        predictor = fit_rung(
            "full",
            strategy,
            data.train,
            data.val,
            budget=Budget(),
            meter=meter,
            workdir=tmp_path / "work",
            # one restart is enough: a restarted rank never reads the killed attempt's gloo
            # addresses (ddp._attempt_store; before it, a late rank failed its init at times)
            scale=Scale(nproc=2, max_restarts=1),
            prices=Prices(),
        )
    folder = tmp_path / "work" / "ddp"
    result = json.loads((folder / "result.json").read_text())
    assert [row["epoch"] for row in result["history"]] == [0, 1, 2]  # no epoch lost
    log = (folder / "torchrun.log").read_text()
    assert "resuming from epoch 1" in log  # the second attempt did not redo epoch 0
    assert predictor.predict_proba(["card lost"]).shape == (1, len(data.train.labels))
    attempts = {p.stem: json.loads(p.read_text()) for p in (folder / "attempts").glob("*.json")}
    assert sorted(attempts) == ["0-0", "0-1", "1-0", "1-1"]
    card = meter.card
    assert card.extra["restarts"] == 1 and card.processes == 2
    # The card holds the killed attempt's work too: more CPU than the finished ranks spent,
    # by at least what the first attempt's ranks had spent before they trained.
    wasted = attempts["0-0"]["cpu_s"] + attempts["0-1"]["cpu_s"]
    assert card.cpu_s >= card.extra["ranks_cpu_s"] + wasted


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_nodes_on_loopback_train_a_rung_together_through_c10d(
    tiny_backbone: Path, small_csv: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import frugalml
    from tests.training.test_distributed import free_port

    endpoint = f"127.0.0.1:{free_port()}"
    nodes = ["--nnodes", "2", "--nproc", "1", "--rdzv-endpoint", endpoint]
    follower = subprocess.Popen(
        [sys.executable, "-m", "frugalml", "fit", "--node-rank", "1", *nodes],
        cwd=tmp_path,
        env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        result = frugalml.fit(
            small_csv,
            out=tmp_path / "run",
            strategies=["tfidf", "full"],
            ship="none",
            options={"full": {"backbone": str(tiny_backbone), "train": {"epochs": 1}}},
            scale=Scale(nproc=1, nnodes="2", rdzv_endpoint=endpoint),
        )
        stdout, stderr = follower.communicate(timeout=300)
    finally:
        follower.kill()
    assert follower.returncode == 0, stderr[-3000:]
    assert "node 1: trained 1 torch rung(s)" in stdout
    cards = {c.strategy: c.cost for c in result.ladder.candidates}
    assert cards["tfidf"].processes == 1  # run once, on node 0
    assert cards["full"].processes == 2 and cards["full"].extra["nodes"] == 2


def wait_until(found: Any, processes: list[Any], what: str, timeout_s: float = 300) -> Any:
    """`found()` once it is truthy; fails if a process ends first or after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (value := found()):
        ended = [p.args[:6] for p in processes if p.poll() is not None]
        assert not ended, f"{ended} ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.1)  # polling interval of the wait, not a wait for an event
    return value


def kill_node(pid: int) -> None:
    """SIGKILL a node: every process group of `pid` and its descendants (its torchrun and
    ranks run in sessions of their own), all at once, as a machine that dies."""
    import os
    import signal

    import psutil

    root = psutil.Process(pid)
    groups = {os.getpgid(p.pid) for p in [root, *root.children(recursive=True)]}
    for group in groups:
        os.killpg(group, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_elastic_nodes_1_to_2_node_1_leaves_mid_epoch_and_node_0_finishes_alone(
    tiny_backbone: Path, small_csv: Path, tmp_path: Path
) -> None:
    import contextlib
    import os
    import subprocess
    import sys

    from tests.training.test_distributed import free_port

    nodes = ["--nnodes", "1:2", "--nproc", "1", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "frugalml", "fit"]
    logs = contextlib.ExitStack()  # the nodes' output files, closed when they are done
    # Node 1's ranks write `held-RANK` in epoch 1 and wait there to be killed, so it leaves
    # mid-epoch, after rank 0 checkpointed epoch 0, at a moment the test sees.
    follower = subprocess.Popen(
        [*cli, "--node-rank", "1", *nodes, "--out", str(tmp_path / "node1")],
        env={**env, FAULT_ENV: "hold:1:1"},
        stdout=logs.enter_context((tmp_path / "node1.log").open("wb")),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    fit = [str(small_csv), "--strategies", "full", "--backbone", str(tiny_backbone)]
    fit += ["--set", "full.train.epochs=3", "--set", "full.train.batch_size=8"]
    fit += ["--ship", "none", "--out", str(tmp_path / "run"), "--max-restarts", "2"]
    leader_log = tmp_path / "node0.log"
    leader = subprocess.Popen(
        [*cli, *fit, *nodes],
        env=env,
        stdout=logs.enter_context(leader_log.open("wb")),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a node of its own: kill_node never reaches pytest
    )
    run = tmp_path / "run"
    try:
        held = wait_until(lambda: next(run.glob("**/ddp/held-*"), None), [leader, follower], "hold")
        assert held.read_text().startswith("world 2:")  # both nodes trained attempt 0
        kill_node(follower.pid)
        leader.wait(timeout=600)
    finally:
        for process in (leader, follower):
            if process.poll() is None:
                kill_node(process.pid)
            process.wait()
        logs.close()
    assert leader.returncode == 0, leader_log.read_text()[-3000:]
    # Rank 0 logged each epoch once: none lost, and node 0 alone resumed from epoch 1 (its
    # checkpoint) rather than redoing epoch 0. (The work folder with torchrun's log is gone.)
    curves = (run / "curves" / "full" / "scalars.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curves] == [0, 1, 2]
    report = json.loads((run / "report.json").read_text())
    card = next(row["cost"] for row in report["candidates"] if row["strategy"] == "full")
    assert card["extra"]["restarts"] == 1
    # It finished on node 0 alone; the attempt node 1 left had had 2 ranks.
    assert card["processes"] == 1 and card["extra"]["nodes"] == 1
    assert card["extra"]["peak_processes"] == 2


@pytest.mark.slow
def test_torchrun_runs_the_cli_rank_0_climbs_and_the_other_rank_trains_each_torch_rung(
    tiny_backbone: Path, small_csv: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from tests.training.test_distributed import free_port

    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    launch += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}"]
    fit = ["-m", "frugalml", "fit", str(small_csv), "--strategies", "tfidf,full"]
    fit += ["--backbone", str(tiny_backbone), "--set", "full.train.epochs=1"]
    fit += ["--ship", "none", "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [*launch, *fit],
        cwd=tmp_path,
        env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    cards = {row["strategy"]: row["cost"] for row in report["candidates"]}
    assert cards["tfidf"]["processes"] == 1  # run once, by rank 0
    assert cards["full"]["processes"] == 2 and cards["full"]["extra"]["nodes"] == 1
    # Rank 0 trained its shard in its own process; the other rank's CPU is added to it.
    assert cards["full"]["cpu_s"] >= cards["full"]["extra"]["ranks_cpu_s"] > 0


def setfit(backbone: Path, batch_size: int) -> Any:
    train = {"epochs": 1, "batch_size": batch_size, "lr": 1e-3}
    options = {"backbone": str(backbone), "max_length": 32, "max_pairs": 64, "train": train}
    return get_strategy("setfit").build(**options)


@pytest.mark.slow  # 2 gloo ranks: ~10 s; test_scale keeps `full` on two ranks fast
def test_setfit_on_two_ranks_tunes_the_encoder_as_one_process_at_twice_the_batch(
    still_backbone: Path, data: Splits, tmp_path: Path
) -> None:
    with CostMeter() as one_meter:
        one = setfit(still_backbone, BATCH).fit(
            data.train, data.val, budget=Budget(), meter=one_meter, workdir=tmp_path / "one"
        )
    with CostMeter() as meter:
        two = fit_rung(
            "setfit",
            setfit(still_backbone, BATCH // 2),
            data.train,
            data.val,
            budget=Budget(max_wall_s=600),  # agreed by the ranks (no pair forecast under DDP)
            meter=meter,
            workdir=tmp_path / "two",
            scale=Scale(nproc=2),
            prices=Prices(),
        )
    encoder = lambda p: {k: v.numpy() for k, v in p.encoder.model.state_dict().items()}  # noqa: E731
    expected, got = encoder(one), encoder(two)
    worst = max(float(np.abs(expected[k] - got[k]).max()) for k in expected)
    assert worst <= 1e-5, worst
    before = setfit(still_backbone, BATCH).fine_tuning(data.train, data.val, meter=CostMeter())
    moved = {k: v.detach().numpy() for k, v in before.model.state_dict().items()}
    assert max(float(np.abs(moved[k] - got[k]).max()) for k in got) > 1e-4  # it did train
    # The head is rank 0's choice on validation from the same encoder; its solver's tolerance
    # (not the ranks) sets how close (measured: logits within 3e-3).
    texts = list(data.val.texts)
    np.testing.assert_allclose(two.logits(texts), one.logits(texts), atol=2e-2)
    assert (two.logits(texts).argmax(1) == one.logits(texts).argmax(1)).mean() >= 0.95
    # Rank 0 alone wrote the outcome: one predictor, one result, nothing per rank.
    folder = tmp_path / "two" / "ddp"
    assert {p.name for p in folder.iterdir()} == {
        "job.json", "result.json", "predictor", "torchrun.log", "attempts"
    }  # fmt: skip
    card = meter.card
    assert card.processes == 2 and card.extra["nodes"] == 1
    assert card.cpu_s >= card.extra["ranks_cpu_s"] > 0
    assert card.peak_rss_mb > one_meter.card.peak_rss_mb


@pytest.mark.slow  # 2 gloo ranks: ~10 s; test_scale keeps `full` on two ranks fast
def test_distillation_on_two_ranks_trains_the_student_one_process_trains_at_twice_the_batch(
    still_backbone: Path, data: Splits, tmp_path: Path
) -> None:
    from frugalml.ship.distill import distill
    from frugalml.training.loop import TrainConfig

    teacher = full(still_backbone, BATCH).fit(
        data.train, data.val, budget=Budget(), meter=CostMeter()
    )
    student_train = {"epochs": 1, "lr": 1e-3, "head_lr": 4e-3}

    def student(batch_size: int, workdir: Path, scale: Scale | None) -> Any:
        with CostMeter() as meter:
            predictor = distill(
                teacher,
                list(data.train.texts),  # 160 texts and 2 word-dropout copies: whole batches
                data.val,
                config=TrainConfig(batch_size=batch_size, **student_train),
                labels=data.train.y,
                head_dropout=0.0,  # dropout masks differ with the batch split
                meter=meter,
                workdir=workdir,
                scale=scale,
            )
        return predictor, meter.card

    (one, one_card), (two, card) = (
        student(BATCH, tmp_path / "one", None),
        student(BATCH // 2, tmp_path / "two", Scale(nproc=2)),
    )
    expected, got = weights(one), weights(two)
    assert expected.keys() == got.keys()
    assert len(two.encoder.model.encoder.layer) == 1  # every other of the tiny BERT's 2
    worst = max(float(np.abs(expected[k] - got[k]).max()) for k in expected)
    assert worst <= 1e-5, worst
    print(f"distillation: max |delta| = {worst:.2e}")
    assert not np.allclose(teacher.head.coef, got["head.coef"], atol=1e-4)  # it trained
    folder = tmp_path / "two" / "ddp"
    assert {p.name for p in folder.iterdir()} == {
        "job.json", "result.json", "predictor", "teacher", "torchrun.log", "attempts"
    }  # fmt: skip
    assert card.processes == 2 and card.extra["restarts"] == 0
    assert card.cpu_s >= card.extra["ranks_cpu_s"] > 0
    # The teacher's pass ran once, in this process: both cards hold it and the same training.
    assert 0.8 * one_card.flops < card.flops <= one_card.flops * 1.01
