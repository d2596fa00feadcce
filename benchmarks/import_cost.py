"""What a process pays before it can serve a bundle: import time, memory, `serve` ready time.

Every serve worker (and soon every torchrun rank, federated client and app) pays these, so
they are measured in fresh processes, never in this one:

- import: wall time of `import frugalml.bundle` and the cumulative time `-X importtime`
  reports for it, median of --runs processes; which heavy modules that import pulled in;
- rss: resident memory after `frugalml.load(BUNDLE)` and the first prediction;
- serve: from starting `frugalml serve BUNDLE` until GET /readyz on 127.0.0.1 answers 200.

frugalml's sources are byte-compiled first, as an installed package's are: compiling them on
every import (PYTHONDONTWRITEBYTECODE) would add time and memory no deployment pays. CPU time
is reported beside wall time, since it suffers less when other processes share the machine.

Each run is appended to benchmarks/results/import_cost.json with the commit measured, the
time and the machine's load. On a shared machine, compare runs made in alternation; an older
commit is measured from a worktree that holds this script:

    python benchmarks/import_cost.py RUN_DIR/bundle
    python benchmarks/import_cost.py        # builds an int8 MiniLM bundle on the demo first

    git worktree add --detach /tmp/before 1f8d508
    cp benchmarks/import_cost.py /tmp/before/benchmarks/
    out=$PWD/benchmarks/results/import_cost.json
    python /tmp/before/benchmarks/import_cost.py RUN_DIR/bundle --out "$out"

Without a bundle it runs `frugalml fit` on the packaged demo with the frozen probe shipped as
int8 (the real MiniLM; about a minute), in a temporary folder.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "import_cost.json"
HEAVY = ("torch", "transformers", "pandas", "pyarrow", "sklearn", "scipy", "onnxruntime")
DEMO = ROOT / "src" / "frugalml" / "data" / "demo" / "bank_intents.csv"

_IMPORT = """
import json, sys, time
start, cpu = time.perf_counter(), time.process_time()
import frugalml.bundle
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
print(json.dumps({
    "wall_s": wall,
    "cpu_s": cpu,
    "frugalml_modules": sorted(m for m in sys.modules if m.startswith("frugalml")),
    "heavy": [m for m in %r if m in sys.modules],
}))
"""

_PREDICT = """
import json, sys, time
start, cpu = time.perf_counter(), time.process_time()
import frugalml
bundle = frugalml.load(sys.argv[1])
bundle.predict(["my card has not arrived yet"])
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
status = dict(
    line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line
)
print(json.dumps({
    "wall_s": wall,
    "cpu_s": cpu,
    "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
    "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
    "heavy": [m for m in %r if m in sys.modules],
    "frugalml_modules": sorted(m for m in sys.modules if m.startswith("frugalml")),
}))
"""


def _env() -> dict[str, str]:
    """This checkout's source first, whatever frugalml the interpreter has installed."""
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _python(code: str, *args: str, importtime: bool = False) -> tuple[dict[str, Any], str]:
    flags = ["-X", "importtime"] if importtime else []
    done = subprocess.run(
        [sys.executable, *flags, "-c", code, *args],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _importtime_us(stderr: str) -> int:
    """Cumulative microseconds of the top-level `frugalml*` entries of `-X importtime`: the
    package and the bundle module together, and everything they pulled in."""
    total = 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        if name.startswith(" frugalml") and not name.startswith("  "):
            total += int(cumulative)
    return total


def measure_import(runs: int) -> dict[str, Any]:
    walls, cpus, cumulative = [], [], []
    first: dict[str, Any] = {}
    for _ in range(runs):
        result, _ = _python(_IMPORT % (HEAVY,))
        walls.append(result["wall_s"])
        cpus.append(result["cpu_s"])
        first = first or result
        _, stderr = _python(_IMPORT % (HEAVY,), importtime=True)
        cumulative.append(_importtime_us(stderr))
    return {
        "wall_s_median": statistics.median(walls),
        "wall_s": walls,
        "cpu_s_median": statistics.median(cpus),
        "importtime_s_median": statistics.median(cumulative) / 1e6,
        "frugalml_module_count": len(first["frugalml_modules"]),
        "heavy_modules": first["heavy"],
    }


def measure_rss(bundle: Path, runs: int) -> dict[str, Any]:
    results = [_python(_PREDICT % (HEAVY,), str(bundle))[0] for _ in range(runs)]
    return {
        "rss_mb_median": statistics.median(r["rss_mb"] for r in results),
        "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in results),
        "load_and_first_predict_s_median": statistics.median(r["wall_s"] for r in results),
        "load_and_first_predict_cpu_s_median": statistics.median(r["cpu_s"] for r in results),
        "heavy_modules": results[0]["heavy"],
        "frugalml_module_count": len(results[0]["frugalml_modules"]),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready_s(bundle: Path, timeout_s: float = 120.0) -> float:
    port = _free_port()
    command = [sys.executable, "-m", "frugalml", "serve", str(bundle), "--port", str(port)]
    start = time.perf_counter()
    server = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        while time.perf_counter() - start < timeout_s:
            if server.poll() is not None:
                raise RuntimeError(f"frugalml serve exited: {server.stderr.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.01)  # polling a port that is not listening yet
        raise RuntimeError(f"frugalml serve was not ready after {timeout_s} s")
    finally:
        server.terminate()
        server.wait(timeout=60)


def measure_serve(bundle: Path, runs: int) -> dict[str, Any]:
    ready = [_ready_s(bundle) for _ in range(runs)]
    return {"ready_s_median": statistics.median(ready), "ready_s": ready}


def build_bundle(folder: Path) -> Path:
    run = folder / "run"
    command = [sys.executable, "-m", "frugalml", "fit", str(DEMO), "--out", str(run)]
    command += ["--strategies", "frozen_probe", "--ship", "int8"]
    subprocess.run(command, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return run / "bundle"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def describe(bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = manifest["predictor"]
    return {
        "path": str(bundle),
        "strategy": manifest["strategy"],
        "format": spec.get("format", "native"),
        "precision": spec.get("precision", "fp32"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", type=Path, help="bundle folder (else built)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per figure")
    parser.add_argument("--serve-runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "src" / "frugalml", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or build_bundle(Path(tmp))
        kind = describe(bundle)
        entry = {
            "commit": _git("rev-parse", "--short", "HEAD"),
            "measured": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_changed_since_commit": bool(_git("status", "--porcelain", "src")),
            "bundle": kind,
            "runs": args.runs,
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_1m": os.getloadavg()[0],
                "python": platform.python_version(),
            },
            "import": measure_import(args.runs),
            "rss": measure_rss(bundle, args.runs),
            "serve": measure_serve(bundle, args.serve_runs),
        }
    previous = json.loads(args.out.read_text())["entries"] if args.out.exists() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"entries": [*previous, entry]}, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
