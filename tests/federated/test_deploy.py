"""Flower's deployment runtime on loopback, every party a separate process: `frugalml federate
server` (a SuperLink over TLS admitting only listed keys) and three `frugalml federate client`
SuperNodes training the tiny BERT's LoRA; a fourth, unlisted client is refused, one listed
client killed mid-round does not stop the run, and one that joins while round 1 is under way
takes part in round 2."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from frugalml.data.split import stratified_split
from tests.conftest import demo_dataset

pytest.importorskip("flwr")
pytest.importorskip("peft")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_csv(path: Path, texts: list[str], labels: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels, strict=True))
    return path


def _wait(condition: object, timeout: float, what: str) -> None:
    """Poll `condition` (a callable) until it holds; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting {timeout:.0f} s for {what}"
        threading.Event().wait(0.25)  # re-check 4 times a second


class Processes:
    """Started processes, each in its own session so the test can kill one with its children."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self, name: str, cmd: list[str], home: Path, **env_vars: str
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ, FLWR_HOME=str(home), OMP_NUM_THREADS="1", **env_vars)
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        proc = self.started[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.started.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.started.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(name)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@pytest.mark.slow  # ~2.5 min: out of `make test` (10-minute budget); .ci/run runs it apart
@pytest.mark.timeout(900)  # ~10 Python processes start; minutes on a loaded 2-core machine
def test_deployment_with_tls_and_node_auth_survives_a_killed_client_and_admits_a_late_one(
    tiny_backbone: Path, tmp_path: Path, processes: Processes
) -> None:
    import frugalml

    fed = [sys.executable, "-m", "frugalml", "federate"]
    keys = tmp_path / "keys"
    subprocess.run([*fed, "certs", str(keys), "--clients", "4"], check=True, timeout=120)
    assert (keys / "ca.crt").exists() and (keys / "client-3.pub").exists()

    splits = stratified_split(demo_dataset(), seed=0)
    names = splits.train.labels

    def csv_of(data: object, path: Path) -> Path:
        return _write_csv(path, list(data.texts), [names[i] for i in data.y])  # type: ignore[attr-defined]

    val, test = csv_of(splits.val, tmp_path / "val.csv"), csv_of(splits.test, tmp_path / "test.csv")
    parts = np.array_split(np.random.default_rng(0).permutation(len(splits.train)), 4)
    data = [
        csv_of(splits.train.subset(np.sort(p)), tmp_path / f"bank-{i}.csv")
        for i, p in enumerate(parts)
    ]

    port, out = _free_port(), tmp_path / "run"
    server_cmd = [
            *fed, "server", "--out", str(out), "--certs", str(keys), "--port", str(port),
            *[a for i in range(3) for a in ("--allow", str(keys / f"client-{i}.pub"))],
            "--val", str(val), "--test", str(test), "--rung", "lora", "--rounds", "2",
            "--min-clients", "2", "--round-timeout", "600",
            "--set", f"lora.backbone={tiny_backbone}", "--set", "lora.max_length=32",
            "--set", "lora.train.lr=0.005", "--set", "lora.train.head_lr=0.02",
    ]  # fmt: skip
    processes.start("server", server_cmd, tmp_path / "home-server")
    joined = tmp_path / "late-client-joined"

    def start_client(i: int, **fault: str) -> None:
        client_cmd = [
                *fed, "client", "--data", str(data[i]), "--superlink", f"127.0.0.1:{port}",
                "--ca", str(keys / "ca.crt"), "--key", str(keys / f"client-{i}"),
                "--port", str(_free_port()), "--wait", "60" if i == 3 else "600",
        ]  # fmt: skip
        processes.start(f"client-{i}", client_cmd, tmp_path / f"home-{i}", **fault)

    # client_app.FAULT_VAR: client-0 answers round 1 only once client-1 has joined; client-2
    # dies, with its SuperNode, when round 2's message reaches it; client-3's key is not listed
    start_client(0, FRUGALML_FEDERATED_FAULT=f"hold:1:{joined}")
    start_client(2, FRUGALML_FEDERATED_FAULT="die:2")
    start_client(3)

    # TLS: the SuperLink presents a certificate our CA signed, for 127.0.0.1
    def handshake() -> bool:
        context = ssl.create_default_context(cafile=str(keys / "ca.crt"))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                return tls.version() is not None
        except ConnectionRefusedError:
            return False

    _wait(handshake, 300, "the SuperLink's TLS port")

    # the unlisted client is refused: the SuperLink knows no such key, its SuperNode gives up
    unlisted = processes.started["client-3"]
    _wait(lambda: unlisted.poll() is not None, 300, "the unlisted client to be refused")
    assert unlisted.returncode != 0
    link_log = out / ".flower" / "superlink.log"
    assert "No SuperNode found with the given public key" in link_log.read_text()

    # client-1 joins late: once round 1's message has reached client-0 (Flower's log line)
    _wait(lambda: "Receiving: train message" in processes.log("client-0"), 600, "round 1")
    start_client(1)

    def late_id() -> int | None:
        found = re.search(r"SuperNode ID: (\d+)", processes.log("client-1"))
        return None if found is None else int(found.group(1))

    _wait(lambda: late_id() is not None, 300, "the late client to connect")
    activated = f"[Fleet.ActivateNode] Activated node_id={late_id()}"
    _wait(lambda: activated in link_log.read_text(), 60, "the SuperLink to activate it")
    joined.touch()  # round 1 may end now; round 2 samples the late client too

    # a listed client dies (process group killed) once round 2's message reaches it
    dying = processes.started["client-2"]
    _wait(lambda: dying.poll() is not None, 800, "client-2 to die in round 2")
    assert dying.returncode == -signal.SIGKILL
    node_id = re.search(r"SuperNode ID: (\d+)", processes.log("client-2"))
    assert node_id is not None

    server = processes.started["server"]
    _wait(lambda: server.poll() is not None, 800, "the federated run to end")
    assert server.returncode == 0, processes.log("server")[-3000:]

    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    killed = int(node_id.group(1)) % 2**31
    assert all(len(r["answered"]) >= 2 for r in rounds[1:])  # the rounds went on without it
    assert killed not in rounds[2]["answered"]
    assert killed in rounds[1]["answered"]  # it took part until it died
    assert rounds[2]["failed"] >= 1  # its round-2 message came back failed
    assert all(r["bytes_up"] > 0 for r in rounds[1:])
    late = int(late_id() or 0) % 2**31  # sampled and counted from the round after it joined
    assert late not in rounds[1]["answered"] and late in rounds[2]["answered"]
    assert str(late) in json.loads((out / "costs.json").read_text())["clients"]
    assert link_log.read_text().count("[Fleet.ActivateNode] Activated") <= 3  # not client-3

    bundle = frugalml.load(out / "bundle")  # an ordinary bundle, LoRA merged
    assert bundle.manifest.strategy == "lora"
    proba = bundle.predict_proba(["I lost my card", "what is my balance"])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)


@pytest.mark.slow  # another ~8 processes; the in-process test_secagg.py covers the protocol fast
@pytest.mark.timeout(900)
def test_deployment_with_secagg_aggregates_over_superlink(
    tiny_backbone: Path, tmp_path: Path, processes: Processes
) -> None:
    """`--secagg` on the deployment runtime: SecAgg+'s four exchanges a round travel through
    the SuperLink to three separate SuperNodes, whose context keeps each party's keys."""
    import frugalml

    fed = [sys.executable, "-m", "frugalml", "federate"]
    keys = tmp_path / "keys"
    subprocess.run([*fed, "certs", str(keys), "--clients", "3"], check=True, timeout=120)
    splits = stratified_split(demo_dataset(), seed=0)
    names = splits.train.labels

    def csv_of(data: object, path: Path) -> Path:
        return _write_csv(path, list(data.texts), [names[i] for i in data.y])  # type: ignore[attr-defined]

    val = csv_of(splits.val, tmp_path / "val.csv")
    parts = np.array_split(np.random.default_rng(0).permutation(len(splits.train)), 3)
    port, out = _free_port(), tmp_path / "run"
    server_cmd = [
            *fed, "server", "--out", str(out), "--certs", str(keys), "--port", str(port),
            *[a for i in range(3) for a in ("--allow", str(keys / f"client-{i}.pub"))],
            "--val", str(val), "--rung", "frozen_probe", "--rounds", "2", "--secagg",
            "--secagg-max-weight", "200", "--round-timeout", "600",
            "--set", f"frozen_probe.backbone={tiny_backbone}",
            "--set", "frozen_probe.max_length=32",
    ]  # fmt: skip
    processes.start("server", server_cmd, tmp_path / "home-server")
    for i, p in enumerate(parts):
        bank = csv_of(splits.train.subset(np.sort(p)), tmp_path / f"bank-{i}.csv")
        client_cmd = [
                *fed, "client", "--data", str(bank), "--superlink", f"127.0.0.1:{port}",
                "--ca", str(keys / "ca.crt"), "--key", str(keys / f"client-{i}"),
                "--port", str(_free_port()), "--wait", "600",
        ]  # fmt: skip
        processes.start(f"client-{i}", client_cmd, tmp_path / f"home-{i}")

    server = processes.started["server"]
    _wait(lambda: server.poll() is not None, 800, "the federated run to end")
    assert server.returncode == 0, processes.log("server")[-3000:]
    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for r in rounds[1:]:
        assert len(r["answered"]) == 3 and r["failed"] == 0
        assert r["bytes_up"] > 0 and r["val_accuracy"] is not None
    bundle = frugalml.load(out / "bundle")
    proba = bundle.predict_proba(["I lost my card", "what is my balance"])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
