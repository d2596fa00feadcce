"""How close are the ladder's forecasts to what each rung then costs, and what do they cost?

Runs the ladder as a user would (`frugalml.fit`, default rungs, a quality bar, a cold
embedding cache, a fresh process per data set) on Banking77 (train → test, bar accuracy
0.915), Financial PhraseBank AllAgree (stratified 80/20, bar accuracy 0.93, strict) and the
embedded demo (bar macro-F1 0.95, as `frugalml demo`). For every rung that ran: forecast and
actual wall, CPU and peak RSS, and forecast ÷ actual (issue 18's bar: within [0.77, 1.3]);
per data set, forecasting's CPU ÷ the ladder's CPU (bar: < 10%). The machine's load average
is recorded beside: on a busy machine timings, and so ratios, move.
Writes benchmarks/results/forecast_accuracy.json.

    python benchmarks/forecast_accuracy.py [--datasets banking77,phrasebank,demo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import DATASETS, machine, write_result

BAND = (0.77, 1.3)
MAX_SHARE = 0.10
# The bars of benchmarks/ladder_vs_peers.py (see there why PhraseBank's is strict) and of
# `frugalml demo`.
SETTINGS: dict[str, dict[str, Any]] = {
    "banking77": {"metric": "accuracy", "target": 0.915, "strict": False},
    "phrasebank": {"metric": "accuracy", "target": 0.93, "strict": True},
    "demo": {"metric": "macro_f1", "target": 0.95, "strict": False},
}


def run_one(name: str, out: Path) -> dict[str, Any]:
    """One data set's ladder in this process, as a user's `fit` would run it."""
    import frugalml
    from frugalml.data import DEMO_INTENTS

    settings: dict[str, Any] = dict(SETTINGS[name])
    if name == "demo":
        data: Any = DEMO_INTENTS
        test = None
        settings.update(text_col="text", label_col="label")
    else:
        splits = DATASETS[name]()
        data, test = splits.train, splits.test
    load_before = os.getloadavg()
    result = frugalml.fit(
        data,
        test=test,
        out=out,
        strategies=frugalml.api.DEFAULT_STRATEGIES,
        ship="none",  # shipping is measured by benchmarks/compress.py
        **settings,
    )
    ladder = result.ladder
    rungs = [rung_row(c) for c in ladder.candidates]
    forecast_cpu = ladder.forecast_cost.get("cpu_s", 0.0)
    startup_cpu = ladder.forecast_cost.get("startup_cpu_s", 0.0)
    return {
        "settings": settings,
        "chosen": ladder.chosen.strategy,
        "rungs": rungs,
        "skipped": ladder.skipped,
        "forecast_cpu_s": forecast_cpu,
        "forecast_wall_s": ladder.forecast_cost.get("wall_s", 0.0),
        "forecast_startup_cpu_s": startup_cpu,  # of forecast_cpu_s: imports, a first load
        "ladder_cpu_s": forecast_cpu + sum(c.cost.cpu_s for c in ladder.candidates),
        "forecast_share_of_ladder_cpu": ladder.forecast_share(),  # less start-up
        "forecast_share_with_startup": forecast_cpu
        / (forecast_cpu + sum(c.cost.cpu_s for c in ladder.candidates)),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def rung_row(c: Any) -> dict[str, Any]:
    f = c.forecast or {}
    ratios = c.forecast_over_actual()
    return {
        "strategy": c.strategy,
        "forecast": {key: f.get(key) for key in ("wall_s", "cpu_s", "peak_rss_mb")},
        "actual": {
            "wall_s": c.cost.wall_s,
            "cpu_s": c.cost.cpu_s,
            "peak_rss_mb": c.cost.peak_rss_mb,
        },
        "forecast_over_actual": ratios,
        "in_band": {k: v is not None and BAND[0] <= v <= BAND[1] for k, v in ratios.items()},
        "forecast_took_cpu_s": f.get("took_cpu_s"),
        "forecast_need_mb": (f.get("memory_bytes") or 0) / 2**20,
        "basis": f.get("basis"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="banking77,phrasebank,demo")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one data set here
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.json.write_text(json.dumps(run_one(args.one, args.json.parent / "run")))
        return
    rows: dict[str, Any] = {}
    for name in args.datasets.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"frugalml-forecast-{name}-"))
        env = {**os.environ, "FRUGALML_CACHE": str(work / "cache")}  # cold, as a new user's
        out = work / "row.json"
        command = [sys.executable, __file__, "--one", name, "--json", str(out)]
        subprocess.run(command, check=True, env=env)
        rows[name] = json.loads(out.read_text())
        print_row(name, rows[name])
        path = write_result(
            "forecast_accuracy",
            {"machine": machine(), "band": BAND, "max_share": MAX_SHARE, "rows": rows},
        )
    print(f"wrote {path}")


def print_row(name: str, row: dict[str, Any]) -> None:
    share = row["forecast_share_of_ladder_cpu"]
    print(
        f"{name}: forecasting {row['forecast_cpu_s'] - row['forecast_startup_cpu_s']:.1f} "
        f"+ {row['forecast_startup_cpu_s']:.1f} start-up of {row['ladder_cpu_s']:.1f} ladder "
        f"CPU-s ({share:.1%}; {row['forecast_share_with_startup']:.1%} with start-up); load "
        f"{row['load_average_before'][0]:.1f} → "
        f"{row['load_average_after'][0]:.1f}",
        flush=True,
    )
    for rung in row["rungs"]:
        r = rung["forecast_over_actual"]
        cells = "  ".join(f"{k} {v:.2f}" if v is not None else f"{k} -" for k, v in r.items())
        print(f"  {rung['strategy']:13s} forecast ÷ actual: {cells}", flush=True)


if __name__ == "__main__":
    main()
