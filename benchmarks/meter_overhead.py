"""Is the cost meter's own overhead under 1% of wall time?

Measures (1) the fixed cost of entering and leaving a CostMeter, averaged over many uses,
and (2) a real workload (the tfidf rung on the embedded demo) timed alternately with and
without the meter, so machine noise hits both sides alike. Writes
benchmarks/results/meter_overhead.json.

    python benchmarks/meter_overhead.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result
from frugalml.api import load_dataset
from frugalml.config import Budget
from frugalml.costs import CostMeter
from frugalml.data import DEMO_INTENTS, stratified_split
from frugalml.strategies.tfidf import TfidfConfig, TfidfStrategy


def fixed_cost_s(n: int = 2000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with CostMeter():
            pass
    return (time.perf_counter() - start) / n


def workload() -> None:
    splits = stratified_split(load_dataset(DEMO_INTENTS))
    with CostMeter() as inner:  # the strategy's API needs a meter; it is the same in both arms
        TfidfStrategy(TfidfConfig()).fit(splits.train, splits.val, budget=Budget(), meter=inner)


def main() -> None:
    per_use = fixed_cost_s()
    plain, metered = [], []
    workload()  # warm-up
    for _ in range(15):
        start = time.perf_counter()
        workload()
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        with CostMeter():
            workload()
        metered.append(time.perf_counter() - start)
    median_plain, median_metered = statistics.median(plain), statistics.median(metered)
    result = {
        "fixed_cost_per_use_ms": per_use * 1000,
        "workload_median_s": median_plain,
        "fixed_cost_share_of_workload": per_use / median_plain,
        "metered_over_plain_median_ratio": median_metered / median_plain,
        "target_share": 0.01,
    }
    print(
        f"meter enter+exit: {per_use * 1e3:.3f} ms per use; workload {median_plain:.3f} s; "
        f"fixed share {per_use / median_plain:.4%}; metered/plain median "
        f"{median_metered / median_plain:.4f}"
    )
    print(f"wrote {write_result('meter_overhead', result)}")


if __name__ == "__main__":
    main()
