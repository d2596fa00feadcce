"""Pareto frontiers on hand-built candidates, and the reports that show them (JSON, MD, HTML)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import frugalml
from frugalml.costs import CostCard
from frugalml.ladder.frontier import frontier_summary, pareto_mask
from frugalml.ladder.report import write_reports
from frugalml.ladder.run import Candidate, LadderResult
from frugalml.metrics import Quality, Speed

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def candidate(name: str, usd: float, cpu_s: float, f1: float, per_s: float) -> Candidate:
    """A finished rung with the given training $, CPU-s, validation macro-F1 and texts/s;
    its brier (lower is better) is 1 - macro-F1."""
    brier = round(1 - f1, 6)
    quality = Quality(
        n=200,
        accuracy=f1,
        accuracy_ci=(f1 - 0.04, f1 + 0.03),
        macro_f1=f1,
        macro_f1_ci=(f1 - 0.05, f1 + 0.04),
        per_class={},
        confusion=[],
        more={"brier": (brier, (round(brier - 0.03, 6), round(brier + 0.04, 6)))},
    )
    cost = CostCard(
        wall_s=cpu_s,
        cpu_s=cpu_s,
        peak_rss_mb=300.0,
        energy_kwh=cpu_s * 10 / 3.6e6,
        energy_source="estimate(10 W per busy core)",
        usd=usd,
        price_basis="test VM at $0.096/h",
    )
    speed = Speed(
        latency_p50_ms=1.0, latency_p95_ms=2.0, throughput_per_s=per_s, throughput_batch=32
    )
    return Candidate(name, {}, quality, None, cost, speed, Path(name), ece=0.05)


@pytest.fixture
def ladder() -> LadderResult:
    """tfidf, frozen_probe, lora on the training frontier; full_ft costs more and scores less.

    On inference, lora is faster than frozen_probe and better, so frozen_probe drops off.
    """
    rungs = [
        candidate("tfidf", 0.00001, 2.0, 0.80, per_s=25000.0),
        candidate("frozen_probe", 0.0005, 30.0, 0.85, per_s=300.0),
        candidate("lora", 0.0026, 71.0, 0.868, per_s=400.0),
        candidate("full_ft", 0.01, 300.0, 0.86, per_s=400.0),
    ]
    return LadderResult(rungs, rungs[2], "lora has the best validation macro_f1 (0.868)")


# -- pareto_mask --------------------------------------------------------------------
def test_a_single_point_is_its_own_frontier() -> None:
    assert pareto_mask([1.0], [0.5]) == [True]


def test_dominated_points_are_off_the_frontier() -> None:
    costs, qualities = [1.0, 2.0, 3.0, 0.5], [0.6, 0.5, 0.9, 0.6]
    # 1.0 costs more than 0.5 for the same quality; 2.0 costs more than 0.5 and scores less
    assert pareto_mask(costs, qualities) == [False, False, True, True]


def test_ties_on_one_axis_are_broken_by_the_other() -> None:
    assert pareto_mask([1.0, 1.0], [0.7, 0.8]) == [False, True]  # same cost, less quality
    assert pareto_mask([1.0, 2.0], [0.8, 0.8]) == [True, False]  # same quality, more cost


def test_identical_points_both_stay_on_the_frontier() -> None:
    assert pareto_mask([1.0, 1.0, 2.0], [0.8, 0.8, 0.7]) == [True, True, False]


def test_tuple_costs_break_ties_in_order() -> None:
    assert pareto_mask([(1.0, 5.0), (1.0, 3.0)], [0.8, 0.8]) == [False, True]


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="2 costs but 1 qualities"):
        pareto_mask([1.0, 2.0], [0.5])


# -- frontier_summary ----------------------------------------------------------------
def test_training_frontier_and_its_next_rungs(ladder: LadderResult) -> None:
    train = frontier_summary(ladder, "macro_f1")["train"]
    assert train["members"] == ["tfidf", "frozen_probe", "lora"]
    first, second = train["steps"]
    assert (second["from"], second["to"]) == ("frozen_probe", "lora")
    assert second["extra_usd"] == pytest.approx(0.0021)
    assert second["extra_cpu_s"] == pytest.approx(41.0)
    assert second["gain_points"] == pytest.approx(1.8)
    assert (
        second["sentence"]
        == "frozen_probe → lora: +$0.0021 (+41 CPU-s) for +1.8 points of macro_f1"
    )
    assert (
        first["sentence"]
        == "tfidf → frozen_probe: +$0.00049 (+28 CPU-s) for +5.0 points of macro_f1"
    )


def test_a_lower_is_better_metric_has_the_same_frontier_mirrored(ladder: LadderResult) -> None:
    train = frontier_summary(ladder, "brier")["train"]
    assert train["members"] == ["tfidf", "frozen_probe", "lora"]  # lower brier is better
    assert train["steps"][1]["gain_points"] == pytest.approx(1.8)  # brier 0.150 → 0.132
    assert train["steps"][1]["sentence"].endswith("for +1.8 points of brier")


def test_inference_frontier_uses_ms_per_text(ladder: LadderResult) -> None:
    inference = frontier_summary(ladder, "macro_f1")["inference"]
    assert inference["members"] == ["tfidf", "lora"]
    (step,) = inference["steps"]
    assert step["extra_ms_per_text"] == pytest.approx(2.5 - 0.04)
    assert step["sentence"] == "tfidf → lora: +2.5 ms per text for +6.8 points of macro_f1"


def test_a_lone_candidate_has_no_next_rung() -> None:
    only = candidate("tfidf", 0.00001, 2.0, 0.8, per_s=25000.0)
    summary = frontier_summary(LadderResult([only], only, "only one"), "accuracy")
    assert summary["train"] == {
        "cost": "training $, ties broken by CPU-s",
        "members": ["tfidf"],
        "steps": [],
    }
    assert summary["inference"]["members"] == ["tfidf"]


# -- reports -------------------------------------------------------------------------
def png_width(data: bytes) -> int:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert height > 0
    return int(width)


def test_reports_mark_the_frontier_and_escape_user_strings(
    ladder: LadderResult, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    ladder.candidates[0].strategy = "<b>tf&idf</b> $x$"  # HTML and mathtext must both be inert
    header = {"data": "<script>alert(1)</script>.csv", "n_train": 10}
    json_path, md_path, html_path = write_reports(
        tmp_path, ladder, metric="macro_f1", header=header
    )
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["frontier"]["train"]["members"][1:] == ["frozen_probe", "lora"]
    assert [row["frontier"] for row in report["leaderboard"]] == ["both", "train", "both", ""]
    md = md_path.read_text(encoding="utf-8")
    assert "| strategy | frontier |" in md
    assert "- frozen_probe → lora: +$0.0021 (+41 CPU-s) for +1.8 points of macro_f1" in md
    page = html_path.read_text(encoding="utf-8")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in page
    assert "<b>tf" not in page and "&lt;b&gt;tf&amp;idf&lt;/b&gt;" in page
    assert page.count('class="chosen"') == 1
    assert "frozen_probe → lora: +$0.0021 (+41 CPU-s) for +1.8 points of macro_f1" in page
    assert png_width((tmp_path / "frontier.png").read_bytes()) > 0


def test_html_is_written_without_matplotlib(
    ladder: LadderResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # None makes `import` raise ImportError
    *_, html_path = write_reports(tmp_path, ladder, metric="macro_f1", header={})
    page = html_path.read_text(encoding="utf-8")
    assert "pip install 'frugalml[report]'" in page
    assert "data:image/png" not in page
    assert "frozen_probe → lora" in page
    assert not (tmp_path / "frontier.png").exists()


def fit_tfidf(small_csv: Path, tmp_path: Path) -> frugalml.FitResult:
    pytest.importorskip("matplotlib")
    return frugalml.fit(small_csv, out=tmp_path / "run", strategies=["tfidf"])


def test_fit_writes_a_self_contained_html_report(small_csv: Path, tmp_path: Path) -> None:
    result = fit_tfidf(small_csv, tmp_path)
    page = result.report_html.read_text(encoding="utf-8")
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match, "the plot should be embedded as a data URI"
    png = (result.run_dir / "frontier.png").read_bytes()
    assert base64.b64decode(match.group(1)) == png
    assert png_width(png) > 0
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "frontier" in json.loads(result.report_json.read_text(encoding="utf-8"))


# Chromium must not reach out: no background services, and any name lookup or proxied
# request fails. The report itself references nothing outside the file.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
]


@pytest.mark.slow
def test_the_plot_renders_in_a_browser(small_csv: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH (Debian: apt-get install chromium)")
    result = fit_tfidf(small_csv, tmp_path)
    profile = f"--user-data-dir={tmp_path / 'chromium-profile'}"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, profile, "--dump-dom", result.report_html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    match = re.search(r'data-plot-width="(\d+)"', dom)
    assert match, f"the page's load script did not run; DOM starts: {dom[:300]!r}"
    assert int(match.group(1)) == png_width((result.run_dir / "frontier.png").read_bytes()) > 0
