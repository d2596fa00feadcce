"""The ladder's controls: quality bar, budget, forecasts, overrides, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

import frugalml
from frugalml.config import Budget, parse_budget, parse_overrides, parse_target
from frugalml.errors import ConfigError, FrugalError
from frugalml.ladder.run import choose, held_out_shortfall
from frugalml.metrics import Quality
from tests.ladder.test_frontier_report import candidate as finished_rung


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", Budget(max_wall_s=600)),
        ("90s", Budget(max_wall_s=90)),
        ("1.5h", Budget(max_wall_s=5400)),
        ("$0.05", Budget(max_usd=0.05)),
        ("0.01kWh", Budget(max_kwh=0.01)),
        ("5Wh", Budget(max_kwh=0.005)),
        ("2m, $1", Budget(max_wall_s=120, max_usd=1.0)),
    ],
)
def test_budgets_parse(text: str, expected: Budget) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["ten minutes", "$", "-5m", "0s"])
def test_bad_budgets_say_what_is_allowed(text: str) -> None:
    with pytest.raises(ConfigError, match="--budget"):
        parse_budget(text)


def test_targets_and_overrides_parse() -> None:
    assert parse_target("macro_f1=0.9") == ("macro_f1", 0.9)
    assert parse_target("accuracy=1") == ("accuracy", 1.0)
    assert parse_target("brier=0.1") == ("brier", 0.1)
    assert parse_target("log_loss=1.5") == ("log_loss", 1.5)  # not a share: no cap at 1
    assert parse_target("recall@5=0.8") == ("recall_at_5", 0.8)
    for bad in ("accuracy", "=0.9", "accuracy=high"):
        with pytest.raises(ConfigError, match="--target must look like"):
            parse_target(bad)
    with pytest.raises(ConfigError, match="--target accuracy must lie between 0 and 1"):
        parse_target("accuracy=90")
    # an unknown metric lists the registered ones and the closest (was: the format message)
    with pytest.raises(ConfigError, match=r"unknown metric 'f1' \(known: .*brier.*did you mean"):
        parse_target("f1=0.9")
    assert parse_overrides(["full.train.epochs=5", "lora.r=16", "lora.target_modules=[query]"]) == {
        "full": {"train": {"epochs": 5}},
        "lora": {"r": 16, "target_modules": ["query"]},
    }
    with pytest.raises(ConfigError, match=r"STRATEGY\.FIELD=VALUE"):
        parse_overrides(["epochs=5"])


def test_nested_override_keeps_the_strategy_defaults() -> None:
    from frugalml.strategies import get_strategy

    strategy = get_strategy("lora").build(train={"epochs": 1})
    assert strategy.config.train.epochs == 1  # type: ignore[attr-defined]
    assert strategy.config.train.lr == 1e-3  # lora's own default, not TrainConfig's
    with pytest.raises(ConfigError, match=r"lora\.r: Input should be greater than or equal to 1"):
        get_strategy("lora").build(r=0)


def brier_ladder() -> list[Any]:
    """tfidf, frozen_probe, lora, full_ft by training cost; brier 0.200, 0.150, 0.132, 0.140,
    each with the 95% interval (brier - 0.03, brier + 0.04)."""
    return [
        finished_rung("tfidf", 0.00001, 2.0, 0.80, per_s=25000.0),
        finished_rung("frozen_probe", 0.0005, 30.0, 0.85, per_s=300.0),
        finished_rung("lora", 0.0026, 71.0, 0.868, per_s=400.0),
        finished_rung("full_ft", 0.01, 300.0, 0.86, per_s=400.0),
    ]


def test_a_lower_is_better_target_is_met_at_or_below_it() -> None:
    rungs = brier_ladder()
    pick, reason = choose(rungs, "brier", 0.16)
    assert pick.strategy == "frozen_probe"  # tfidf's 0.200 is above the bar
    assert reason == ("frozen_probe is the cheapest candidate with validation brier ≤ 0.16 (0.150)")
    assert choose(rungs, "brier", None)[0].strategy == "lora"  # the lowest, not the highest
    pick, reason = choose(rungs, "brier", 0.2, strict=True)  # the interval's high end counts
    assert pick.strategy == "frozen_probe" and "95% interval up to 0.190" in reason
    pick, reason = choose(rungs, "brier", 0.16, strict=True)  # no high end is ≤ 0.16
    assert pick.strategy == "lora"
    assert reason.startswith("no candidate's 95% interval cleared brier 0.16; lora has the best")
    assert choose(rungs, "macro_f1", 0.86)[0].strategy == "lora"  # higher is better still


def with_test_score(rung: Any, f1: float, ci: tuple[float, float]) -> Any:
    """`rung` with a test set scored: macro-F1 `f1` in `ci`, brier 1 - f1 in (1 - ci)."""
    brier = round(1 - f1, 6)
    rung.test = Quality(
        n=100,
        accuracy=f1,
        accuracy_ci=ci,
        macro_f1=f1,
        macro_f1_ci=ci,
        per_class={},
        confusion=[],
        more={"brier": (brier, (round(1 - ci[1], 6), round(1 - ci[0], 6)))},
    )
    return rung


def test_a_test_score_short_of_the_bar_names_the_rung_likely_to_meet_it() -> None:
    tfidf, probe, lora, full = brier_ladder()
    chosen = with_test_score(tfidf, 0.70, (0.65, 0.74))
    rungs = [
        chosen,
        with_test_score(probe, 0.86, (0.82, 0.90)),
        with_test_score(lora, 0.84, (0.80, 0.88)),
    ]
    short = held_out_shortfall(rungs, chosen, "macro_f1", 0.8, {})
    assert short is not None and (short.next_rung, short.next_why) == ("frozen_probe", "test 0.860")
    assert short.message() == (
        "tfidf's test macro_f1 0.700 [0.650, 0.740] is below the bar 0.8 by more than its 95% "
        "interval (validation 0.800): the validation score was optimistic. Likely to meet it: "
        "frozen_probe (test 0.860). If the test data was collected apart from the training "
        "data, validate on data like it (--val FILE)."
    )
    not_run = {"full": "target macro_f1 ≥ 0.8 already met by tfidf"}
    short = held_out_shortfall([chosen], chosen, "macro_f1", 0.8, not_run)
    assert short is not None and short.next_rung == "full"
    assert "full (not run: target macro_f1 ≥ 0.8 already met by tfidf)" in short.message()
    short = held_out_shortfall([chosen], chosen, "macro_f1", 0.8, {})
    assert short is not None and short.next_rung is None
    assert "No rung of this run is likely to meet it" in short.message()
    assert held_out_shortfall([chosen], chosen, "macro_f1", 0.74, {}) is None  # within the CI
    assert held_out_shortfall([chosen], chosen, "macro_f1", None, {}) is None  # no bar
    # lower is better: the interval's low end must lie above the bar
    assert held_out_shortfall([chosen], chosen, "brier", 0.26, {}) is None
    short = held_out_shortfall([chosen], chosen, "brier", 0.25, {})
    assert short is not None and "above the bar 0.25" in short.message()
    assert held_out_shortfall([full], full, "macro_f1", 0.99, {}) is None  # no test set


def test_the_ladder_refuses_a_metric_it_cannot_score(small_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot choose by 'oos_recall': it needs oos scores"):
        frugalml.fit(small_csv, out=tmp_path / "run", metric="oos_recall")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def tabular_rung(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A registered rung that takes only tables; the registry is restored afterwards (copied
    once every built-in rung is in it, so none registers into the copy and is lost)."""
    from frugalml.strategies import StrategyConfig, base, register_strategy

    base.strategy_names()
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    class TablesConfig(StrategyConfig):
        kind: Literal["tables_only"] = "tables_only"

    @register_strategy(
        "tables_only", config=TablesConfig, predictor=object, cost_rank=0, inputs=("tabular",)
    )
    class TablesOnly:
        """Gradient-boosted trees on table rows."""

        def __init__(self, config: TablesConfig) -> None:
            self.config = config

        def fit(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a rung that cannot take text was fitted on text")

    yield "tables_only"


def test_rungs_that_cannot_take_the_datas_kind_are_skipped(
    small_csv: Path, tmp_path: Path, tabular_rung: str
) -> None:
    result = frugalml.fit(small_csv, out=tmp_path / "run", strategies=[tabular_rung, "tfidf"])
    assert [c.strategy for c in result.ladder.candidates] == ["tfidf"]
    assert result.ladder.skipped == {tabular_rung: "takes tabular, data is text"}
    report = json.loads(result.report_json.read_text())
    assert report["skipped"] == {tabular_rung: "takes tabular, data is text"}
    with pytest.raises(FrugalError, match="no strategy could run") as err:
        frugalml.fit(small_csv, out=tmp_path / "run2", strategies=[tabular_rung])
    assert err.value.problems == [f"{tabular_rung}: takes tabular, data is text"]


def test_a_rung_must_declare_known_input_kinds() -> None:
    from frugalml.strategies import StrategyConfig, register_strategy

    class OddConfig(StrategyConfig):
        kind: Literal["odd"] = "odd"

    audio: Any = ("audio",)
    with pytest.raises(ValueError, match="inputs must be kinds of"):
        register_strategy("odd", config=OddConfig, predictor=object, cost_rank=0, inputs=audio)(
            object
        )


def test_target_stops_at_the_first_rung_that_meets_it(
    small_csv: Path,
    tmp_path: Path,
    tiny_backbone: Path,
) -> None:
    events: list[tuple[str, str]] = []
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["frozen_probe", "tfidf"],
        target=0.05,
        options={"frozen_probe": {"backbone": str(tiny_backbone)}},
        progress=lambda event, info: events.append((event, info.get("strategy", ""))),
    )
    assert [c.strategy for c in result.ladder.candidates] == ["tfidf"]
    assert "already met by tfidf" in result.ladder.skipped["frozen_probe"]
    report = json.loads(result.report_json.read_text())
    assert report["skipped"]["frozen_probe"].startswith("target macro_f1")
    # A rung above the one that met the bar is not even forecast: forecasts cost real work.
    assert ("forecast", "tfidf") in events
    assert ("forecast", "frozen_probe") not in events


def test_strict_target_needs_the_intervals_low_end_to_clear_the_bar(
    small_csv: Path,
    tmp_path: Path,
    tiny_backbone: Path,
) -> None:
    first = frugalml.fit(small_csv, out=tmp_path / "plain", strategies=["tfidf"])
    val = first.ladder.chosen.val
    low, point = val.macro_f1_ci[0], val.macro_f1
    assert low < point
    between = (low + point) / 2  # met by the point estimate, not by the interval
    options = {"frozen_probe": {"backbone": str(tiny_backbone)}}
    kept = frugalml.fit(
        small_csv,
        out=tmp_path / "a",
        strategies=["tfidf", "frozen_probe"],
        target=between,
        strict=False,
    )
    assert [c.strategy for c in kept.ladder.candidates] == ["tfidf"]
    strict = frugalml.fit(  # strict is the default (issue 11, item 12)
        small_csv,
        out=tmp_path / "b",
        strategies=["tfidf", "frozen_probe"],
        target=between,
        options=options,
    )
    assert [c.strategy for c in strict.ladder.candidates] == ["tfidf", "frozen_probe"]
    assert "interval" in strict.ladder.reason
    assert json.loads((strict.run_dir / "run.json").read_text())["strict"] is True


def test_forecasts_are_kept_beside_the_actuals(
    small_csv: Path,
    tmp_path: Path,
    tiny_backbone: Path,
) -> None:
    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf", "full"],
        options={"full": {"backbone": str(tiny_backbone), "train": {"epochs": 2}}},
    )
    for candidate in result.ladder.candidates:
        assert candidate.forecast is not None and candidate.forecast["wall_s"] > 0
        assert candidate.forecast_ratio() is not None
        manifest = json.loads((candidate.bundle / "manifest.json").read_text())
        assert manifest["forecast"]["wall_s"] == candidate.forecast["wall_s"]
    curves = (result.run_dir / "curves" / "full" / "scalars.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curves] == [0, 1]  # training curves, per epoch
    assert not (result.run_dir / "work").exists() or not any((result.run_dir / "work").iterdir())


def test_a_rung_forecast_to_overrun_the_budget_is_skipped(
    small_csv: Path,
    tmp_path: Path,
    tiny_backbone: Path,
) -> None:
    """A day's budget that no load on the test machine spends, and a rung of 10^10 epochs
    that no machine fits in it (two timed steps of even a 0.1 ms would forecast 10^6 s): the
    outcome does not hang on how fast this machine is today."""
    day = 24 * 3600.0
    forecasts: dict[str, float] = {}

    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "forecast":
            forecasts[data["strategy"]] = data["forecast"]["wall_s"]
        assert (event, data.get("strategy")) != ("start", "full"), "the budget let it run"

    result = frugalml.fit(
        small_csv,
        out=tmp_path / "run",
        strategies=["tfidf", "full"],
        budget=Budget(max_wall_s=day),
        options={"full": {"backbone": str(tiny_backbone), "train": {"epochs": 10**10}}},
        progress=progress,
    )
    assert [c.strategy for c in result.ladder.candidates] == ["tfidf"]
    assert forecasts["full"] > day
    assert re.fullmatch(
        r"forecast \d+ s > \d+ s left of the budget", result.ladder.skipped["full"]
    ), result.ladder.skipped["full"]


def test_sigkill_mid_rung_then_resume_finishes_without_redoing_work(
    small_csv: Path,
    tmp_path: Path,
    tiny_backbone: Path,
) -> None:
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "frugalml",
        "fit",
        str(small_csv),
        "--strategies",
        "tfidf,full",
        "--backbone",
        str(tiny_backbone),
        "--set",
        "full.train.epochs=25",
        "--set",
        "full.train.patience=1000",
        "--out",
        str(run),
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = run / "work" / "full" / "checkpoints" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    killed_at = json.loads(state.read_text())["epoch"]
    tfidf_manifest = (run / "candidates" / "tfidf" / "manifest.json").read_bytes()
    assert not (run / "report.json").exists()

    resumed = subprocess.run(
        [sys.executable, "-m", "frugalml", "fit", "--resume", str(run)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "tfidf: reused from the earlier run" in resumed.stderr
    assert f"resuming from epoch {killed_at}" in resumed.stderr
    assert (run / "candidates" / "tfidf" / "manifest.json").read_bytes() == tfidf_manifest
    report = json.loads((run / "report.json").read_text())
    assert {row["strategy"] for row in report["leaderboard"]} == {"tfidf", "full"}
    assert not (run / "work" / "full").exists()  # checkpoints removed once the rung finished


def test_calibration_uses_the_validation_logits_fit_reports() -> None:
    from collections.abc import Sequence

    import numpy as np

    from frugalml.ladder.run import _validation_logits

    class Fitted:
        """Reports its validation logits; computing them again would be a second pass."""

        labels, temperature, stopped = ("a", "b"), 1.0, ""

        def __init__(self, val_logits: np.ndarray | None) -> None:
            self.val_logits = val_logits

        def logits(self, texts: Sequence[str]) -> np.ndarray:
            return np.ones((len(texts), 2), dtype=np.float32)

        def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
            return self.logits(texts) / 2

        def save(self, folder: Path) -> dict[str, float]:
            return {"temperature": self.temperature}

        @classmethod
        def load(cls, folder: Path, spec: dict[str, float], labels: tuple[str, ...]) -> Fitted:
            return cls(None)

    texts = ["x", "y", "z"]
    reported = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert _validation_logits(Fitted(reported), texts) is reported
    computed = _validation_logits(Fitted(None), texts)
    np.testing.assert_array_equal(computed, np.ones((3, 2)))
    with pytest.raises(ValueError, match="2 rows for 3 validation texts"):
        _validation_logits(Fitted(reported[:2]), texts)
