"""`fit --volume` / `--ship auto` on real small runs (the tiny BERT, TF-IDF): the shipped step is
the one cheapest to own at the volume, distillation runs only when it could pay back, and the
report's cost-of-ownership table and break-even volumes agree with the cost cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import frugalml
from frugalml.data.split import Splits
from frugalml.errors import ConfigError
from frugalml.ladder.ownership import Option, break_evens
from tests.test_cli import frugalml as frugalml_cli

pytest.importorskip("onnxruntime")


def probe(tiny_backbone: Path) -> dict[str, dict[str, Any]]:
    return {"frozen_probe": {"backbone": str(tiny_backbone), "cache": False}}


def totals_by_hand(report: dict[str, Any], volume: float) -> dict[str, float]:
    """Each option's total at `volume`, from its build cost and its serving cost alone."""
    return {
        o["name"]: o["fixed_usd"] + volume * o["usd_per_prediction"]
        for o in report["ownership"]["options"]
    }


@pytest.mark.parametrize("volume", [0.0, 1e12])
def test_ship_auto_ships_the_accepted_step_cheapest_to_own(
    demo_splits: Splits, tiny_backbone: Path, tmp_path: Path, volume: float
) -> None:
    result = frugalml.fit(
        demo_splits.train,
        out=tmp_path / "run",
        strategies=["frozen_probe"],
        options=probe(tiny_backbone),
        volume=volume,
        max_drop=100.0,  # every step accepted: only cost decides
    )
    report = json.loads(result.report_json.read_text())
    compression = report["compression"]
    assert compression["volume"] == volume
    steps = {s["name"]: s for s in compression["steps"]}
    if volume == 0:  # a student cannot pay back its teacher pass with nothing to serve
        assert "distilled" not in steps
        assert compression["skipped"]["distilled"].startswith("cannot pay back at 0 predictions")
    else:
        assert steps["distilled"]["accepted"]
    totals = totals_by_hand(report, volume)
    shipped = f"frozen_probe · {compression['shipped']}"
    exported = {k: v for k, v in totals.items() if " · " in k}
    assert shipped == min(exported, key=exported.__getitem__)
    assert report["ownership"]["chosen"] == shipped
    # the chain's options are built from the cost cards: training + the chain up to the step
    train = report["candidates"][0]["cost"]["usd"]
    onnx = next(o for o in report["ownership"]["options"] if o["name"].endswith("· onnx"))
    assert onnx["fixed_usd"] == pytest.approx(train + steps["onnx"]["cost"]["usd"])
    int8 = next(o for o in report["ownership"]["options"] if o["name"].endswith("· int8"))
    assert int8["fixed_usd"] == pytest.approx(onnx["fixed_usd"] + steps["int8"]["cost"]["usd"])
    assert result.bundle.manifest.predictor["format"] == "onnx"


def test_the_reports_cost_of_ownership_is_drawn_from_its_own_cost_cards(
    small_csv: Path, tiny_backbone: Path, tmp_path: Path
) -> None:
    """Whether the measured lines cross depends on timings, so this asserts only what they
    cannot change: the options, who may be chosen, and that the cheapest and the break-evens
    are those of the recorded lines (the crossings themselves are checked on hand-made cost
    cards in tests/ladder/test_ownership.py)."""
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf", "frozen_probe"],
        options=probe(tiny_backbone),
        volume="2.5M/month",
        max_drop=100.0,
    )
    report = json.loads(result.report_json.read_text())
    ownership = report["ownership"]
    assert ownership["volume"] == 2.5e6
    assert 2.5e6 in ownership["volumes"]
    options = {o["name"]: o for o in ownership["options"]}
    assert {"tfidf", "frozen_probe"} <= set(options)  # every candidate, as measured
    eligible = {name for name, o in options.items() if o["eligible"]}
    # no target: the best rung is chosen, so only its own formats are choices
    formats = {f"{report['chosen']} · {s['name']}" for s in report["compression"]["steps"][1:]}
    assert eligible == formats == {n for n in options if n.startswith(f"{report['chosen']} · ")}
    lines = [
        Option(o["name"], o["fixed_usd"], o["fixed_cpu_s"], o["usd_per_prediction"], 0.0)
        for o in ownership["options"]
        if o["eligible"]
    ]
    assert ownership["break_evens"] == [b.to_dict() for b in break_evens(lines)]
    for volume, name in zip(ownership["volumes"], ownership["cheapest"], strict=True):
        totals = {k: v for k, v in totals_by_hand(report, volume).items() if k in eligible}
        assert totals[name] == pytest.approx(min(totals.values()))
    markdown = result.report_md.read_text()
    assert "## Cost of ownership" in markdown
    assert "priced for 2.5M predictions" in markdown
    assert "**Break-even volumes:**" in markdown
    assert "Cost of ownership" in result.report_html.read_text()


def test_ship_auto_needs_a_volume(small_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--ship auto chooses the format cheapest to own"):
        frugalml.fit(small_csv, out=tmp_path / "run", strategies=["tfidf"], ship="auto")


def test_fit_command_takes_a_volume_and_refuses_a_bad_one(small_csv: Path, tmp_path: Path) -> None:
    bad = frugalml_cli("fit", small_csv, "--out", tmp_path / "a", "--volume", "lots")
    assert bad.returncode == 2, bad.stderr
    assert "--volume must be a number of predictions" in bad.stderr
    args = ["fit", small_csv, "--out", tmp_path / "b", "--strategies", "tfidf"]
    done = frugalml_cli(*args, "--volume", "1e6")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["ownership"]["volume"] == 1e6
    assert report["compression"]["shipped"] == "onnx"  # TF-IDF: the one ONNX step
    assert "## Cost of ownership" in (tmp_path / "b" / "report.md").read_text()
