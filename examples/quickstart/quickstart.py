"""From a CSV to an HTTP answer: fit → bundle → serve → client.

    python examples/quickstart/quickstart.py                     # the packaged MiniLM
    python examples/quickstart/quickstart.py --backbone DIR      # any local encoder folder

1. `frugalml.fit` climbs the ladder (TF-IDF, then frozen MiniLM embeddings) on
   support_tickets.csv and writes the chosen model as a bundle: RUN/bundle.
2. `frugalml serve RUN/bundle` serves it on 127.0.0.1 (started here as a subprocess).
3. `frugalml.client.predict` asks it about new questions.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import frugalml
from frugalml import client

HERE = Path(__file__).resolve().parent
QUESTIONS = [
    "my new card still hasn't come and it's been two weeks",
    "how do I start using the card you sent me",
    "the money I sent on monday still hasn't reached my sister",
    "someone took my wallet with my debit card in it",
]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)

    # 1. fit: cheapest rung first; the best one is written to RUN/bundle
    result = frugalml.fit(
        args.data,
        out=args.out,
        strategies=["tfidf", "frozen_probe"],
        options={"frozen_probe": {"backbone": args.backbone}},
    )
    bundle = result.run_dir / "bundle"
    chosen = result.ladder.chosen
    print(f"chose {chosen.strategy}: validation macro-F1 {chosen.val.macro_f1:.3f}")
    print(f"bundle: {bundle}\nreport: {result.report_md}")

    # 2. serve: `frugalml serve RUN/bundle --port PORT`, on loopback only
    port = args.port or free_port()
    with serving(bundle, port) as url:
        # 3. ask it, as any application would
        answers = client.predict(url, QUESTIONS)
    for question, answer in zip(QUESTIONS, answers, strict=True):
        label = answer["label"]
        confidence = answer["probabilities"][label]
        print(f"{label:<20} {confidence:.2f}  {question}")
    return answers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "support_tickets.csv")
    parser.add_argument(
        "--backbone",
        default="minilm",
        help="Encoder of the frozen_probe rung: 'minilm' (packaged), a hub id or a folder.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / f"quickstart-{datetime.now():%Y%m%d-%H%M%S}",
        help="Run folder to create (never overwritten).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one).")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(bundle: Path, port: int, *, ready_within_s: float = 120.0) -> Iterator[str]:
    """`frugalml serve` in a subprocess, yielding its URL once /readyz says the model is loaded;
    stopped with SIGTERM (it finishes what it accepted) when the block ends."""
    command = [sys.executable, "-m", "frugalml", "serve", str(bundle), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within_s
        while not _ready(url):
            if server.poll() is not None:
                raise RuntimeError(f"frugalml serve exited:\n{server.communicate()[0]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"frugalml serve was not ready in {ready_within_s:g} s")
            time.sleep(0.1)
        print(f"serving {bundle} at {url}")
        yield url
    finally:
        server.terminate()
        try:
            server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False


if __name__ == "__main__":
    main()
