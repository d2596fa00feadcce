"""Check the nearest-centroid rung against the contract, then climb a ladder that includes it.

python examples/custom_rung/run.py                  # the packaged MiniLM
python examples/custom_rung/run.py --backbone DIR   # any local encoder folder
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import nearest_centroid  # noqa: F401 - importing the module registers the rung

import frugalml
from frugalml.data import DEMO_INTENTS
from frugalml.testing import check_strategy


def main(argv: list[str] | None = None) -> frugalml.FitResult:
    args = parse_args(argv)

    # 1. the contract every rung passes: it raises, listing every failed check, if one fails
    report = check_strategy("nearest_centroid", backbone=args.backbone)
    print(report)

    # 2. a ladder with the new rung beside the built-in ones, by name
    result = frugalml.fit(
        args.data,
        out=args.out,
        strategies=["tfidf", "nearest_centroid", "frozen_probe"],
        options={
            name: {"backbone": args.backbone} for name in ("nearest_centroid", "frozen_probe")
        },
    )
    for candidate in result.ladder.candidates:
        print(f"{candidate.strategy:<17} validation macro-F1 {candidate.val.macro_f1:.3f}")
    print(f"chose {result.ladder.chosen.strategy}; report: {result.report_md}")

    # 3. its bundle loads like any other, in a process that has imported the rung's module
    bundle = frugalml.load(result.run_dir / "candidates" / "nearest_centroid")
    print(bundle.predict(["I lost my card on the bus"])[0]["label"])
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEMO_INTENTS)
    parser.add_argument(
        "--backbone",
        default="minilm",
        help="Encoder of the embedding rungs: 'minilm' (packaged), a hub id or a folder.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / f"custom-rung-{datetime.now():%Y%m%d-%H%M%S}",
        help="Run folder to create (never overwritten).",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
