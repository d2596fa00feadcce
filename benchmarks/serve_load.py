"""Does `frugalml serve` hold up under real load, and what do batching and ONNX int8 buy?

A load generator in its own process drives servers on loopback with one text per request
(Financial PhraseBank test sentences), closed-loop at concurrency 1, 16, 64: `wrk` (Debian's
package; one thread, benchmarks/wrk_predict.lua) when installed, else an httpx.AsyncClient
generator, which costs the 2 shared cores several times more CPU per request. Servers:
  (a) `frugalml serve` on the int8 ONNX bundle, micro-batching on (--max-batch 32, 5 ms);
  (b) the same server and bundle, batching off (--max-batch 1);
  (a2), (b2) as (a), (b) with --workers 2 (one inference thread each, the server's default);
  (c) a naive FastAPI server calling a Hugging Face `pipeline("text-classification")` in eager
      PyTorch per request, on the same fine-tuned weights (the bundle's fp32 source).
Targets at concurrency 16: (a) >= 1.5x (b) in throughput with p95 no worse, (a) >= 4x (c).

Then a soak of (a), open-loop at 80% of its best measured throughput: SOAK seconds with no
failed request and RSS growth under 5%; a hot reload (same bundle path) under the same load
with no failed request; and SIGTERM under load: every request the server accepted is answered
(the client's answered count equals the server's own 'accepted' and 'answered' counts).
Also: seconds from process start to /readyz for (a), and its RSS when ready; and the model
alone, in process, by batch size and thread count (`inference_by_batch`): what batching can
buy on this machine before any HTTP is involved.

The bundles: `top_layers` fine-tuned MiniLM on PhraseBank (80/20, seed 0), shipped by `fit`
as int8 ONNX (bundle/) with its fp32 torch source kept (candidates/top_layers/). Built once in
--workdir and reused; or pass --int8 and --source.

The baseline's model: transformers has no class for "encoder, mean pooling, linear head" (its
BERT classifier pools [CLS] through a dense+tanh layer), so `MeanPooledClassifier` below is a
~20-line PreTrainedModel with the bundle's encoder (from model/encoder) and head (weights from
model/head.safetensors, divided by the bundle's calibration temperature), handed to
`pipeline(...)` as any model is; parity with the bundle's own torch predictions is checked and
recorded. Servers run with the libraries' default thread counts unless --server-threads.

    python benchmarks/serve_load.py            # full run, ~15 min; writes results/serve_load.json
    python benchmarks/serve_load.py --quick    # ~2 s per phase, proves the harness works
                                               # (writes into --workdir, not results/)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

CONCURRENCY = (1, 16, 64)
ADMIN_ENV = "SERVE_LOAD_ADMIN_KEY"
ADMIN_KEY = "serve-load-admin"
BATCHED, UNBATCHED = ["--max-batch", "32", "--max-wait-ms", "5"], ["--max-batch", "1"]
SERVERS = {  # the server's defaults otherwise: inference threads = cores / workers
    "a_frugalml_batched": BATCHED,
    "b_frugalml_unbatched": UNBATCHED,
    # Scale-out on the same machine: one worker per core, one inference thread each.
    "a2_frugalml_batched_2_workers": [*BATCHED, "--workers", "2"],
    "b2_frugalml_unbatched_2_workers": [*UNBATCHED, "--workers", "2"],
}
WRK_SCRIPT = Path(__file__).with_name("wrk_predict.lua")
BATCH_SIZES = (1, 4, 16, 32)
ACCEPTED = re.compile(r"predict requests: (\d+) accepted, (\d+) answered")


# -- the bundles -----------------------------------------------------------------------------
def prepare(args: argparse.Namespace) -> tuple[Path, Path, list[str]]:
    """(int8 bundle, its fp32 torch source, load texts)."""
    import frugalml
    from common import phrasebank
    from frugalml.data import Dataset

    splits = phrasebank()
    texts = list(splits.test.texts)
    if args.int8 and args.source:
        return Path(args.int8), Path(args.source), texts
    run_dir = Path(args.workdir) / ("quick" if args.quick else "full")
    if not (run_dir / "bundle").exists():
        train = splits.train
        options: dict[str, Any] = {}
        if args.quick:  # a few hundred examples and one epoch: the harness, not the model
            keep = range(0, len(train.texts), max(1, len(train.texts) // 300))
            train = Dataset.from_lists(
                [train.texts[i] for i in keep],
                [train.labels[train.y[i]] for i in keep],
                label_names=train.labels,
                name="phrasebank:quick",
            )
            options = {"top_layers": {"train": {"epochs": 1}}}
        frugalml.fit(
            train,
            out=run_dir,
            strategies=["top_layers"],
            ship="int8",
            max_drop=args.max_drop,
            options=options,
            force=True,
        )
    int8, source = run_dir / "bundle", run_dir / "candidates" / "top_layers"
    precision = frugalml.load(int8).manifest.predictor.get("precision")
    if precision != "int8":
        raise SystemExit(f"{int8} shipped {precision}, not int8: raise --max-drop")
    return int8, source, texts


# -- (c): a naive pipeline server on the same weights --------------------------------------
def build_pipeline(source: Path) -> Any:
    """A transformers text-classification pipeline computing what the bundle computes."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, pipeline
    from transformers.modeling_outputs import SequenceClassifierOutput
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    manifest = json.loads((source / "manifest.json").read_text())
    spec, labels = manifest["predictor"], manifest["labels"]
    folder = source / "model" / "encoder"
    config = AutoConfig.from_pretrained(folder)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}

    class MeanPooledClassifier(PreTrainedModel):  # type: ignore[no-untyped-call]
        config_class = type(config)

        def __init__(self) -> None:
            super().__init__(config)
            self.encoder = AutoModel.from_pretrained(folder)
            head = load_file(str(source / "model" / "head.safetensors"))
            self.classifier = torch.nn.Linear(config.hidden_size, len(labels))
            with torch.no_grad():
                self.classifier.weight.copy_(torch.from_numpy(head["coef"]))
                self.classifier.bias.copy_(torch.from_numpy(head["intercept"]))

        def forward(
            self, input_ids: Any, attention_mask: Any, **_: Any
        ) -> SequenceClassifierOutput:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if spec["normalize"]:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return SequenceClassifierOutput(
                logits=self.classifier(pooled) / float(spec["temperature"])
            )

    model = MeanPooledClassifier().eval()  # type: ignore[no-untyped-call]
    # The pipeline logs an error for any class outside its built-in list, then runs it anyway.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.CRITICAL)
    try:
        return pipeline(
            "text-classification",
            model=model,
            tokenizer=AutoTokenizer.from_pretrained(folder),
            device="cpu",
            truncation=True,
            max_length=int(spec["max_length"]),
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def baseline_parity(source: Path, texts: list[str]) -> dict[str, Any]:
    """Does the pipeline predict what the bundle's own torch predictor predicts?"""
    import frugalml

    pipe = build_pipeline(source)
    bundle = frugalml.load(source)
    ours = [p["label"] for p in bundle.predict(texts)]
    theirs = [p["label"] for p in pipe(texts)]
    return {"texts": len(texts), "same_labels": float(np.mean(np.array(ours) == theirs))}


def naive_server(args: argparse.Namespace) -> None:
    """What a first deployment often looks like: one pipeline call per request, eager torch."""
    import uvicorn
    from fastapi import FastAPI

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        state["pipe"] = build_pipeline(Path(args.source))
        state["pipe"](["warm up"])
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/predict")
    def predict(body: dict[str, list[str]]) -> dict[str, Any]:  # sync: on FastAPI's threads
        return {"predictions": state["pipe"](body["texts"])}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


# -- the load generator (its own process) ----------------------------------------------------
def load_main(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts).read_text())
    time.sleep(max(0.0, args.start_at - time.time()))  # a schedule the caller planned around
    records = asyncio.run(
        closed_loop(args.url, texts, args.concurrency, args.duration)
        if args.rate is None
        else open_loop(args.url, texts, args.rate, args.duration)
    )
    Path(args.out).write_text(json.dumps(records))


Body = str | dict[str, Any]  # a text for /v1/predict, or a whole JSON body for another route


async def _send(http: Any, url: str, text: Body) -> tuple[float, float, int | str]:
    import httpx

    body = text if isinstance(text, dict) else {"texts": [text]}
    sent, started = time.time(), time.perf_counter()
    try:
        status: int | str = (await http.post(url, json=body)).status_code
    except httpx.HTTPError as err:
        status = type(err).__name__
    return sent, time.perf_counter() - started, status


async def closed_loop(
    url: str, texts: list[Body], concurrency: int, duration: float
) -> list[tuple[float, float, int | str]]:
    """`concurrency` clients, each sending its next request as soon as it has an answer.

    Each client has its own one-connection httpx client (measured: one shared pool of 64
    connections costs httpx ~4x the CPU per request, and the generator, not the server,
    saturated), made without TLS certificates (plain HTTP; loading them costs ~25 ms each).
    """
    import httpx

    records: list[tuple[float, float, int | str]] = []
    end = time.perf_counter() + duration

    async def client(k: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=60, verify=False) as http:
            i = k
            while time.perf_counter() < end:
                records.append(await _send(http, url, texts[i % len(texts)]))
                i += concurrency

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return records


async def open_loop(
    url: str, texts: list[Body], rate: float, duration: float
) -> list[tuple[float, float, int | str]]:
    """Requests at a fixed rate whatever the answers, as independent users would send them
    (spread over small httpx clients, for the reason `closed_loop` gives)."""
    import httpx

    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    clients = [httpx.AsyncClient(limits=limits, timeout=60, verify=False) for _ in range(32)]
    try:
        start, tasks = time.perf_counter(), []
        for i in range(int(rate * duration)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            http = clients[i % len(clients)]
            tasks.append(asyncio.create_task(_send(http, url, texts[i % len(texts)])))
        return list(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


@dataclass
class Load:
    """A running load generator and the file its records will be in."""

    process: subprocess.Popen[bytes]
    out: Path

    def records(self) -> list[tuple[float, float, int | str]]:
        if self.process.wait() != 0:
            raise RuntimeError("the load generator failed")
        return [(r[0], r[1], r[2]) for r in json.loads(self.out.read_text())]


def run_load(
    url: str,
    texts_file: Path,
    *,
    duration: float,
    concurrency: int = 0,
    rate: float | None = None,
    start_at: float = 0.0,
    path: str = "/v1/predict",
) -> Load:
    out = texts_file.with_name(f"load-{time.monotonic_ns()}.json")
    command = [sys.executable, __file__, "load", "--url", url + path]
    command += ["--texts", str(texts_file), "--duration", str(duration), "--out", str(out)]
    command += ["--rate", str(rate)] if rate else ["--concurrency", str(concurrency)]
    command += ["--start-at", str(start_at)]
    return Load(subprocess.Popen(command), out)


def summarize(records: list[tuple[float, float, int | str]], warmup: float) -> dict[str, Any]:
    """Throughput and latency of the answers after the warm-up seconds."""
    start = min(r[0] for r in records) + warmup
    kept = [r for r in records if r[0] >= start]
    ok = [r for r in kept if r[2] == 200]
    window = max(r[0] + r[1] for r in kept) - start
    latencies = np.array([r[1] for r in ok] or [np.nan]) * 1000
    failures = Counter(str(r[2]) for r in kept if r[2] != 200)
    return {
        "requests": len(kept),
        "failed": len(kept) - len(ok),
        "failures": dict(failures),
        "throughput_per_s": len(ok) / window,
        **{f"p{q}_ms": float(np.percentile(latencies, q)) for q in (50, 95, 99)},
    }


# -- servers ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(command: list[str], env: dict[str, str], log: Path) -> Iterator[dict[str, Any]]:
    """Start a server, wait for /readyz; yields url, process, seconds to ready and RSS then."""
    import httpx
    import psutil

    port = free_port()
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=handle, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        ready_s = time.perf_counter() - started
        rss_mb = psutil.Process(process.pid).memory_info().rss / 2**20
        yield {"url": url, "process": process, "ready_s": ready_s, "rss_mb": rss_mb, "log": log}
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def wrk_closed_loop(
    url: str,
    texts_file: Path,
    concurrency: int,
    duration: float,
    warmup: float,
    path: str = "/v1/predict",
) -> dict[str, Any]:
    """wrk (C, one thread) as the closed-loop generator: it needs a fraction of the CPU httpx
    needs per request, so on a 2-core machine more of it is left to the server measured."""
    bodies = texts_file.with_name(texts_file.stem + ".bodies.jsonl")
    if not bodies.exists():
        texts = json.loads(texts_file.read_text())
        bodies.write_text(
            "".join(json.dumps(t if isinstance(t, dict) else {"texts": [t]}) + "\n" for t in texts)
        )
    env = {**os.environ, "WRK_BODIES": str(bodies), "WRK_PATH": path}
    out = ""
    for seconds in (warmup, duration):  # the warm-up run's numbers are dropped
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s"]
        command += ["--timeout", "30s", "-s", str(WRK_SCRIPT), url]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    found = re.search(r"^WRK (\{.*\})$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no summary: {out[-2000:]}")
    r = json.loads(found.group(1))
    failed = r["socket_errors"] + r["non_2xx"]
    return {
        "requests": r["requests"],
        "failed": failed,
        "failures": {"socket": r["socket_errors"], "non_2xx": r["non_2xx"]} if failed else {},
        "throughput_per_s": (r["requests"] - failed) / r["duration_s"],
        **{f"p{q}_ms": r[f"p{q}_ms"] for q in (50, 95, 99)},
    }


def sweep(info: dict[str, Any], texts_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    for c in CONCURRENCY:
        if args.generator == "wrk":
            rows[str(c)] = wrk_closed_loop(info["url"], texts_file, c, args.phase, args.warmup)
        else:
            load = run_load(
                info["url"], texts_file, duration=args.warmup + args.phase, concurrency=c
            )
            rows[str(c)] = summarize(load.records(), args.warmup)
        row = rows[str(c)]
        print(
            f"    c={c:3d}: {row['throughput_per_s']:7.1f} req/s  p50 {row['p50_ms']:7.1f}  "
            f"p95 {row['p95_ms']:7.1f}  p99 {row['p99_ms']:7.1f} ms  failed {row['failed']}",
            flush=True,
        )
    return rows


def soak(
    command: list[str],
    env: dict[str, str],
    texts_file: Path,
    rate: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Steady load; then a reload under load; then SIGTERM under load. One server throughout."""
    import httpx
    import psutil

    steady, reload_phase, term_phase = args.soak, args.soak_extra, args.soak_extra
    with server(command, env, texts_file.with_name("soak.log")) as info:
        proc = psutil.Process(info["process"].pid)
        t0 = time.time() + 3.0  # the load generator's start-up is not part of the soak
        load = run_load(
            info["url"],
            texts_file,
            duration=steady + reload_phase + term_phase,
            rate=rate,
            start_at=t0,
        )
        time.sleep(t0 + min(5.0, steady * 0.1) - time.time())
        rss_start = proc.memory_info().rss
        rss_peak = rss_start
        while time.time() < t0 + steady:
            rss_peak = max(rss_peak, proc.memory_info().rss)
            time.sleep(0.5)
        rss_end = proc.memory_info().rss
        time.sleep(reload_phase / 3)
        reload_at = time.time()
        reloaded = httpx.post(
            info["url"] + "/v1/model/reload",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120,
        )
        reload_s = time.time() - reload_at
        time.sleep(max(0.0, t0 + steady + reload_phase - time.time()))
        term_at = time.time()
        info["process"].send_signal(signal.SIGTERM)
        exit_code = info["process"].wait(60)
        records = load.records()
        counts = ACCEPTED.findall(info["log"].read_text())
    accepted, answered = (int(x) for x in counts[-1]) if counts else (-1, -1)
    # A connection error after SIGTERM belongs to the shutdown, whenever its request was sent
    # (under overload, requests wait in the client's pool and meet the closed listener).
    before_term = [r for r in records if isinstance(r[2], int) or r[0] + r[1] < term_at]
    steady_r = [r for r in before_term if r[0] < t0 + steady]
    reload_r = [r for r in before_term if t0 + steady <= r[0] < term_at]
    steady_summary = summarize(steady_r, 0.0)
    answered_by_client = [r for r in records if isinstance(r[2], int)]
    return {
        "rate_per_s": rate,
        "steady": {
            "seconds": steady,
            **steady_summary,
            "rss_start_mb": rss_start / 2**20,
            "rss_end_mb": rss_end / 2**20,
            "rss_peak_mb": rss_peak / 2**20,
            "rss_growth_pct": 100 * (rss_end - rss_start) / rss_start,
        },
        # Served at the rate sent? If not, the machine had less capacity than in the sweep.
        "kept_up": steady_summary["throughput_per_s"] >= 0.9 * rate,
        "reload": {
            "status": reloaded.status_code,
            "reload_s": reload_s,
            "requests": len(reload_r),
            "failed": sum(r[2] != 200 for r in reload_r),
            "failures": dict(Counter(str(r[2]) for r in reload_r if r[2] != 200)),
        },
        "sigterm": {
            "server_accepted": accepted,
            "server_answered": answered,
            "client_answered": len(answered_by_client),
            "client_non_200": sum(r[2] != 200 for r in answered_by_client),
            "refused_after_sigterm": len(records) - len(answered_by_client),
            "exit_code": exit_code,
        },
    }


# -- the benchmark ---------------------------------------------------------------------------
def benchmark(args: argparse.Namespace) -> None:
    import frugalml
    from common import machine, write_result

    if args.quick:
        args.phase, args.warmup, args.soak, args.soak_extra = 2.0, 0.5, 2.0, 1.5
    if args.generator is None:
        args.generator = "wrk" if shutil.which("wrk") else "httpx"
    print(f"closed-loop load generator: {args.generator}", flush=True)
    int8, source, texts = prepare(args)
    work = Path(tempfile.mkdtemp(prefix="frugalml-serve-load-"))
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    env = {**os.environ, ADMIN_ENV: ADMIN_KEY}
    env.pop("OMP_NUM_THREADS", None)
    if args.server_threads:
        env["OMP_NUM_THREADS"] = str(args.server_threads)
    serve = [sys.executable, "-m", "frugalml", "serve", str(int8), "--admin-key-env", ADMIN_ENV]
    result: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "settings": {k: v for k, v in vars(args).items() if k != "command"},
        "bundles": {"int8": _describe(frugalml.load(int8)), "source": str(source)},
        "baseline_parity": baseline_parity(source, texts[:64]),
        "rows": {},
    }
    print(f"baseline parity: {result['baseline_parity']}", flush=True)
    result["inference_by_batch"] = inference_by_batch(int8, texts[: 256 if args.quick else 512])
    commands = {name: serve + extra for name, extra in SERVERS.items()}
    commands["c_naive_pipeline"] = [
        sys.executable, __file__, "naive-server", "--source", str(source)
    ]  # fmt: skip
    for name, command in commands.items():
        print(f"{name}:", flush=True)
        with server(command, env, work / f"{name}.log") as info:
            if name.startswith("a_"):
                result["startup"] = {"ready_s": info["ready_s"], "rss_mb": info["rss_mb"]}
                print(f"    ready in {info['ready_s']:.1f} s, RSS {info['rss_mb']:.0f} MB")
            result["rows"][name] = sweep(info, texts_file, args)
    result["targets"] = targets(result["rows"])
    best = max(r["throughput_per_s"] for r in result["rows"]["a_frugalml_batched"].values())
    if args.generator == "wrk":
        # The soak's open-loop generator is httpx (wrk cannot hold a fixed rate), and it takes
        # far more of the 2 shared cores than wrk: 80% of what wrk measured overloaded the
        # server (a first run served 140 of 268 req/s). So the rate is 80% of what (a) serves
        # to the soak's own generator.
        with server(commands["a_frugalml_batched"], env, work / "capacity.log") as info:
            duration = args.warmup + args.phase
            load = run_load(info["url"], texts_file, duration=duration, concurrency=64)
            result["soak_capacity"] = {"generator": "httpx", "concurrency": 64}
            result["soak_capacity"].update(summarize(load.records(), args.warmup))
        best = result["soak_capacity"]["throughput_per_s"]
    print(f"soak at 80% of {best:.0f} req/s:", flush=True)
    result["soak"] = soak(commands["a_frugalml_batched"], env, texts_file, 0.8 * best, args)
    result["soak"]["checks"] = soak_checks(result["soak"])
    print(json.dumps({"targets": result["targets"], "soak": result["soak"]}, indent=2))
    if args.quick:  # a smoke test's numbers are not results
        path = Path(args.workdir) / "serve_load.quick.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    else:
        path = write_result("serve_load", result)
    print(f"wrote {path}")


def inference_by_batch(bundle_path: Path, texts: list[str]) -> dict[str, Any]:
    """The served model alone, in this process: texts/s and CPU-ms per text by batch size
    (length-bucketed as the server does) and by ONNX Runtime threads. It says what batching
    can buy on this machine before any HTTP is involved."""
    import frugalml
    from frugalml.models.onnx_encoder import SessionTuning, tune_sessions
    from frugalml.serve.batching import predict_bucketed

    table: dict[str, Any] = {}
    for threads in (1, os.cpu_count() or 1):
        tune_sessions(SessionTuning(threads=threads))
        model = frugalml.load(bundle_path)
        predict_bucketed(model, texts[:64])  # warm-up
        for size in BATCH_SIZES:
            runs = []
            for _ in range(2):
                wall, cpu = time.perf_counter(), time.process_time()
                for start in range(0, len(texts), size):
                    predict_bucketed(model, texts[start : start + size])
                runs.append((time.perf_counter() - wall, time.process_time() - cpu))
            wall_s, cpu_s = min(runs)
            table[f"threads_{threads}_batch_{size}"] = row = {
                "texts_per_s": len(texts) / wall_s,
                "cpu_ms_per_text": 1000 * cpu_s / len(texts),
            }
            print(
                f"    inference alone, {threads} thread(s), batch {size:2d}: "
                f"{row['texts_per_s']:6.1f} texts/s, {row['cpu_ms_per_text']:.2f} CPU-ms/text",
                flush=True,
            )
    tune_sessions(SessionTuning())
    return table


def targets(rows: dict[str, Any]) -> dict[str, Any]:
    a, b, c = (
        rows[k]["16"] for k in ("a_frugalml_batched", "b_frugalml_unbatched", "c_naive_pipeline")
    )
    a_vs_b = a["throughput_per_s"] / max(b["throughput_per_s"], 1e-9)
    a_vs_c = a["throughput_per_s"] / max(c["throughput_per_s"], 1e-9)
    a2, b2 = (
        rows["a2_frugalml_batched_2_workers"]["16"],
        rows["b2_frugalml_unbatched_2_workers"]["16"],
    )
    return {
        "a_over_b_throughput_c16": a_vs_b,
        "a_over_c_throughput_c16": a_vs_c,
        # Not targets: batching with one worker per core, and what scale-out buys over (a).
        "a2_over_b2_throughput_c16": a2["throughput_per_s"] / max(b2["throughput_per_s"], 1e-9),
        "a2_over_a_throughput_c16": a2["throughput_per_s"] / max(a["throughput_per_s"], 1e-9),
        "a2_over_c_throughput_c16": a2["throughput_per_s"] / max(c["throughput_per_s"], 1e-9),
        "a_p95_ms_c16": a["p95_ms"],
        "b_p95_ms_c16": b["p95_ms"],
        "pass": {
            "a_ge_1.5x_b": a_vs_b >= 1.5,
            "a_p95_le_b_p95": a["p95_ms"] <= b["p95_ms"],
            "a_ge_4x_c": a_vs_c >= 4.0,
        },
    }


def soak_checks(s: dict[str, Any]) -> dict[str, bool]:
    t = s["sigterm"]
    return {
        "served_the_rate": s["kept_up"],
        "steady_zero_failed": s["steady"]["failed"] == 0,
        "rss_growth_under_5pct": s["steady"]["rss_growth_pct"] < 5.0,
        "reload_ok_zero_failed": s["reload"]["status"] == 200 and s["reload"]["failed"] == 0,
        "sigterm_every_accepted_answered": t["server_accepted"]
        == t["server_answered"]
        == t["client_answered"]
        and t["client_non_200"] == 0,
        "sigterm_clean_exit": t["exit_code"] == 0,
    }


def _describe(bundle: Any) -> dict[str, Any]:
    files = [p for p in (bundle.path / "model").rglob("*") if p.is_file()]
    m = bundle.manifest
    return {
        "path": str(bundle.path),
        "strategy": m.strategy,
        "predictor": {k: m.predictor.get(k) for k in ("format", "precision")},
        "size_mb": sum(p.stat().st_size for p in files) / 1e6,
        "test_accuracy": (m.metrics.test or {}).get("accuracy") if m.metrics else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~2 s per phase: a smoke test")
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not measured")
    parser.add_argument("--soak", type=float, default=60.0, help="steady soak seconds")
    parser.add_argument("--soak-extra", type=float, default=10.0, help="reload, SIGTERM phases")
    parser.add_argument(
        "--workdir", default=str(Path(tempfile.gettempdir()) / "frugalml-serve-load")
    )
    parser.add_argument("--int8", help="an int8 ONNX bundle (skips building)")
    parser.add_argument("--source", help="its fp32 torch source bundle")
    parser.add_argument("--max-drop", type=float, default=2.0, help="int8 gate, in points")
    parser.add_argument("--server-threads", type=int, help="OMP_NUM_THREADS for the servers")
    parser.add_argument(
        "--generator", choices=("wrk", "httpx"), help="closed-loop load [wrk if installed]"
    )
    sub = parser.add_subparsers(dest="command")
    naive = sub.add_parser("naive-server", help="(internal) the (c) baseline server")
    naive.add_argument("--source", required=True)
    naive.add_argument("--port", type=int, required=True)
    load = sub.add_parser("load", help="(internal) the load generator")
    load.add_argument("--url", required=True)
    load.add_argument("--texts", required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--concurrency", type=int, default=1)
    load.add_argument("--rate", type=float)
    load.add_argument("--out", required=True)
    load.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start at")
    args = parser.parse_args()
    if args.command == "naive-server":
        naive_server(args)
    elif args.command == "load":
        load_main(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
