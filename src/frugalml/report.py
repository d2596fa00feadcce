"""The run report: leaderboard and cost cards, as JSON for machines and Markdown for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frugalml.search import Candidate, LadderResult


def leaderboard_rows(result: LadderResult, metric: str) -> list[dict[str, Any]]:
    """One flat row per candidate, in ladder order; the chosen one is marked."""
    rows = []
    for c in result.candidates:
        low, high = getattr(c.val, f"{metric}_ci")
        rows.append(
            {
                "strategy": c.strategy,
                "chosen": c is result.chosen,
                f"val_{metric}": c.val.metric(metric),
                f"val_{metric}_ci": [low, high],
                "val_accuracy": c.val.accuracy,
                "val_ece": c.ece,
                "test_accuracy": c.test.accuracy if c.test else None,
                "test_macro_f1": c.test.macro_f1 if c.test else None,
                "train_wall_s": c.cost.wall_s,
                "train_cpu_s": c.cost.cpu_s,
                "train_usd": c.cost.usd,
                "train_kwh": c.cost.energy_kwh,
                "peak_rss_mb": c.cost.peak_rss_mb,
                "latency_p50_ms": c.speed.latency_p50_ms,
                "latency_p95_ms": c.speed.latency_p95_ms,
                "throughput_per_s": c.speed.throughput_per_s,
            }
        )
    return rows


def write_reports(
    run_dir: Path, result: LadderResult, *, metric: str, header: dict[str, Any]
) -> tuple[Path, Path]:
    data = {
        **header,
        "metric": metric,
        "chosen": result.chosen.strategy,
        "reason": result.reason,
        "skipped": result.skipped,
        "leaderboard": leaderboard_rows(result, metric),
        "candidates": [c.summary() for c in result.candidates],
    }
    json_path, md_path = run_dir / "report.json", run_dir / "report.md"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(data, result, metric), encoding="utf-8")
    return json_path, md_path


def _markdown(data: dict[str, Any], result: LadderResult, metric: str) -> str:
    lines = [
        f"# frugalml run: {data.get('data', '')}",
        "",
        f"**Chosen: `{result.chosen.strategy}`** — {result.reason}.",
        "",
        f"Data: {data.get('n_train')} train / {data.get('n_val')} validation / "
        f"{data.get('n_test')} test examples, {data.get('n_classes')} classes, "
        f"seed {data.get('seed')}.",
        "",
        "## Leaderboard",
        "",
        f"| strategy | val {metric} (95% CI) | val ECE | test acc | train wall s | train CPU-s | "
        "train $ | p50 ms (b=1) | texts/s (b=32) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["leaderboard"]:
        low, high = row[f"val_{metric}_ci"]
        test = f"{row['test_accuracy']:.3f}" if row["test_accuracy"] is not None else "—"
        mark = " ✔" if row["chosen"] else ""
        lines.append(
            f"| {row['strategy']}{mark} | {row[f'val_{metric}']:.3f} ({low:.3f}–{high:.3f}) | "
            f"{row['val_ece']:.3f} | {test} | {row['train_wall_s']:.1f} | "
            f"{row['train_cpu_s']:.1f} | "
            f"{row['train_usd']:.5f} | {row['latency_p50_ms']:.1f} | "
            f"{row['throughput_per_s']:.0f} |"
        )
    for name, why in result.skipped.items():
        lines.append(f"| {name} | skipped: {why} | | | | | | | |")
    lines += ["", "## Cost cards", ""]
    lines += [_cost_card(c) for c in result.candidates]
    return "\n".join(lines) + "\n"


def _cost_card(c: Candidate) -> str:
    card = c.cost
    rows = [
        ("wall time", f"{card.wall_s:.2f} s"),
        ("CPU time", f"{card.cpu_s:.2f} s"),
        ("peak memory", f"{card.peak_rss_mb:.0f} MB"),
        ("energy", f"{card.energy_kwh * 1000:.4f} Wh — {card.energy_source}"),
        ("money", f"${card.usd:.6f} — {card.price_basis}"),
        ("FLOPs", f"{card.flops:.3g}" if card.flops else "n/a (not a transformer)"),
        ("GPU time", f"{card.device_s:.2f} s" if card.device_s else "no GPU used"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### {c.strategy}\n\n| | |\n|---|---|\n{body}\n"
