"""Peak memory of loading a CSV: `read_table` + `to_dataset`, as a multiple of the file size.

Generates CSVs of random words with labels under /tmp (10 MB and 100 MB by default), loads
each in a fresh interpreter and reads the peak resident set size (VmHWM) from /proc: the
increase over the resident size just before loading, divided by the file size. The target is
at most 3x (issue 11). "cold" is the first load in the process; "warm" loads a 100 kB file
first, so that what the first call allocates once (lazy imports, parser buffers) does not
count against the file. Results are kept per `--label` (e.g. before/after a change) in
benchmarks/results/load_memory.json.

    python benchmarks/load_memory.py --label after
    PYTHONPATH=/tmp/base/src python benchmarks/load_memory.py --label before --commit 1f8d508
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "load_memory.json"
MB = 1024 * 1024

# Runs in the child: imports first, then the peak is reset (clear_refs 5), so that only
# loading counts. Where the kernel refuses the reset, the peak so far is the baseline.
_CHILD = """
import json, sys, time
from frugalml.data import read_table, to_dataset

if len(sys.argv) > 2:  # warm up on a small file first
    to_dataset(read_table(sys.argv[2]))

def status():
    lines = open('/proc/self/status').read().splitlines()
    return {l.split(':')[0]: int(l.split()[1]) * 1024 for l in lines if l.startswith('Vm')}

try:
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    reset = True
except OSError:
    reset = False
before = status()
t0 = time.perf_counter()
validated = to_dataset(read_table(sys.argv[1]))
seconds = time.perf_counter() - t0
after = status()
print(json.dumps({
    'rss_before': before['VmRSS'], 'peak': after['VmHWM'], 'rss_after': after['VmRSS'],
    'peak_reset': reset, 'seconds': seconds, 'rows': len(validated.dataset),
}))
"""


def make_csv(path: Path, size: int, seed: int = 0) -> Path:
    """Random texts of 4-40 words (some with commas, hence quoted) and one of 50 labels."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(5000)]
    labels = [f"class_{i:02d}" for i in range(50)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        while handle.tell() < size:
            lengths = rng.integers(4, 41, 1000)
            words = rng.integers(0, len(vocab), int(lengths.sum()))
            commas = rng.random(1000) < 0.2
            rows, start = [], 0
            for n, comma in zip(lengths, commas, strict=True):
                text = " ".join(vocab[w] for w in words[start : start + n])
                start += n
                rows.append((text.replace(" ", ", ", 1) if comma else text, labels[n % 50]))
            writer.writerows(rows)
    return path


def measure(path: Path, warm_up: Path | None = None) -> dict[str, Any]:
    """Load `path` in a new interpreter (Linux carries ru_maxrss across exec; VmHWM is fresh)."""
    extra = [str(warm_up)] if warm_up else []
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    child = json.loads(done.stdout)
    size = path.stat().st_size
    increase = child["peak"] - child["rss_before"]
    return {
        "file_mb": round(size / MB, 1),
        "rows": child["rows"],
        "peak_increase_mb": round(increase / MB, 1),
        "peak_over_file": round(increase / size, 2),
        "retained_over_file": round((child["rss_after"] - child["rss_before"]) / size, 2),
        "seconds": round(child["seconds"], 2),
        "peak_reset": child["peak_reset"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="Key of this run in the results file.")
    parser.add_argument("--sizes-mb", default="10,100")
    parser.add_argument("--commit", help="Commit measured, when not this checkout's HEAD.")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="frugalml-load-memory-", dir="/tmp"))
    rows: dict[str, Any] = {}
    try:
        small = make_csv(folder / "warm_up.csv", 100 * 1024, seed=1)
        for size_mb in map(int, args.sizes_mb.split(",")):
            path = make_csv(folder / f"random_{size_mb}mb.csv", size_mb * MB)
            rows[f"{size_mb}mb"] = row = {"cold": measure(path), "warm": measure(path, small)}
            for kind in ("cold", "warm"):
                print(
                    f"{args.label:8s} {size_mb:4d} MB {kind}: peak +"
                    f"{row[kind]['peak_increase_mb']} MB = {row[kind]['peak_over_file']}x "
                    f"the file ({row[kind]['seconds']} s)",
                    flush=True,
                )
            path.unlink()
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    commit = (
        args.commit
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    )
    results[args.label] = {
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
