"""A real Flower simulation (Ray) on CPU with the tiny BERT: three parties, two LoRA rounds,
ending in an ordinary bundle that `frugalml.load` predicts with. Slow (Ray); the fast suite
runs the same ServerApp and ClientApp on the deployment runtime (test_deploy.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frugalml.data import DEMO_INTENTS
from frugalml.errors import ConfigError

pytest.importorskip("flwr")
pytest.importorskip("peft")


@pytest.mark.slow  # Ray's start-up alone takes minutes on 2 cores; test_deploy covers the apps fast
@pytest.mark.timeout(600)
def test_simulate_lora_writes_a_run_folder_and_a_bundle(
    tiny_backbone: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray")  # the simulation runtime; `make test-all` installs it
    import frugalml

    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "frugalml", "federate", "simulate", str(DEMO_INTENTS),
        "--out", str(out), "--clients", "3", "--partition", "iid", "--rung", "lora",
        "--rounds", "2", "--strategy", "fedavg",
        "--set", f"lora.backbone={tiny_backbone}", "--set", "lora.max_length=32",
        "--set", "lora.train.lr=0.005", "--set", "lora.train.head_lr=0.02",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=560, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy" in done.stdout

    rounds = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1, 2]  # 0: the initial model, evaluated
    for r in rounds[1:]:
        assert sorted(r["answered"]) == [0, 1, 2] and r["failed"] == 0
        assert r["bytes_down"] == r["bytes_up"] > 0  # the same state each way, 3 clients
        assert r["val_accuracy"] is not None
    costs = json.loads((out / "costs.json").read_text())
    assert set(costs["clients"]) == {"0", "1", "2"}
    assert all(c["cpu_s"] > 0 for c in costs["clients"].values())
    assert costs["total"]["processes"] == 4  # three clients and the server
    assert (out / "report.html").exists() and (out / "accuracy.png").exists()

    bundle = frugalml.load(out / "bundle")  # an ordinary bundle: LoRA merged
    assert bundle.manifest.strategy == "lora"
    assert bundle.manifest.metrics is not None and bundle.manifest.metrics.test is not None
    proba = bundle.predict_proba(["I lost my card", "what is my balance"])
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    names = [n for n in json.loads((out / "bundle" / "manifest.json").read_text())["files"]]
    assert not any("adapter" in n for n in names)
    # only adapters and the head travelled: far fewer bytes than the whole tiny encoder
    per_client = rounds[1]["bytes_up"] / 3
    encoder = sum(p.stat().st_size for p in (out / "bundle").rglob("*.safetensors"))
    assert per_client < encoder / 3


def test_unknown_rung_and_partition_are_user_errors(tmp_path: Path) -> None:
    from frugalml.federated import simulate

    with pytest.raises(ConfigError, match="--rung must be one of"):
        simulate(DEMO_INTENTS, out=tmp_path / "a", rung="tfidf")
    with pytest.raises(ConfigError, match="--partition must be"):
        simulate(DEMO_INTENTS, out=tmp_path / "b", rung="frozen_probe", partition_by="zipf")
