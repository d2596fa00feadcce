"""A federated run folder, like `fit`'s: per-round metrics and bytes, a cost card per client
and for the server, a report with plots, and the global model as an ordinary bundle."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frugalml.bundle import load, save_bundle, update_manifest
from frugalml.costs import CostCard
from frugalml.data.dataset import Dataset
from frugalml.federated.settings import FederationSettings
from frugalml.federated.task import rung_config
from frugalml.ladder.calibration import (
    calibrated_proba,
    expected_calibration_error,
    fit_temperature,
)
from frugalml.metrics import score
from frugalml.models.encoder_head import EncoderHeadPredictor

if TYPE_CHECKING:
    from frugalml.federated.server_app import Ledger


def write_run(
    run_dir: Path,
    settings: FederationSettings,
    predictor: EncoderHeadPredictor,
    ledger: Ledger,
    server: CostCard,
    val: Dataset | None,
    test: Dataset | None,
) -> dict[str, Any]:
    """Write the bundle (calibrated on the server's validation set), costs, rounds, report."""
    metrics: dict[str, Any] | None = None
    if val is not None:
        logits = predictor.logits(val.texts)
        predictor.temperature = fit_temperature(logits, val.y)
        proba = calibrated_proba(logits, predictor.temperature)
        metrics = {
            "val": score(val.y, proba.argmax(1), val.labels, proba=proba).to_dict(),
            "test": None,
            "val_ece": expected_calibration_error(proba, val.y),
        }
    clients = {c: in_turn(cards) for c, cards in sorted(ledger.client_cards.items())}
    total = CostCard.combine([*clients.values(), server])
    folder = run_dir / "bundle"
    save_bundle(
        folder,
        predictor,
        strategy=settings.rung,
        config=rung_config(settings.rung, settings.options).model_dump(mode="json"),
        task=settings.task,
        data_fingerprint=settings.data_fingerprint
        or "federated: the clients' data stayed with them",
        extra={"train_cost": total.to_dict()},
    )
    if test is not None and metrics is not None:
        proba = load(folder).predict_proba(test.texts)
        metrics["test"] = score(test.y, proba.argmax(1), test.labels, proba=proba).to_dict()
    if metrics is not None:
        update_manifest(folder, metrics=metrics)
    rounds = [asdict(r) for _, r in sorted(ledger.rounds.items())]
    costs = {
        "clients": {str(c): card.to_dict() for c, card in clients.items()},
        "server": server.to_dict(),
        "total": total.to_dict(),
    }
    report = {
        "settings": settings.model_dump(mode="json"),
        "rounds": rounds,
        "costs": costs,
        "bundle": str(folder),
        "val_accuracy": None if metrics is None else metrics["val"]["accuracy"],
        "test_accuracy": None
        if not metrics or not metrics["test"]
        else metrics["test"]["accuracy"],
        "test_macro_f1": None
        if not metrics or not metrics["test"]
        else metrics["test"]["macro_f1"],
        "bytes_total": sum(r["bytes_down"] + r["bytes_up"] for r in rounds),
    }
    _write_json(run_dir / "federation.json", settings.model_dump(mode="json"))
    _write_json(run_dir / "rounds.json", rounds)
    _write_json(run_dir / "costs.json", costs)
    _write_json(run_dir / "report.json", report)
    write_report(run_dir, report)
    return report


def in_turn(cards: list[CostCard]) -> CostCard:
    """One client's rounds, which ran one after another: times and spend add up, peak is the
    largest (`CostCard.combine` is for processes side by side)."""
    first = CostCard.combine(cards)
    first.wall_s = sum(c.wall_s for c in cards)
    first.peak_rss_mb = max(c.peak_rss_mb for c in cards)
    first.processes = 1
    return first


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """report.md and a self-contained report.html with accuracy and bytes per round."""
    rounds = report["rounds"]
    s = report["settings"]
    lines = [
        f"# Federated {s['rung']} with {s['strategy']}: {s['clients']} clients, {_rounds(s)}",
        "",
        f"- test accuracy: {_fmt(report['test_accuracy'])}, "
        f"macro-F1 {_fmt(report['test_macro_f1'])}",
        f"- traffic: {report['bytes_total'] / 1e6:.2f} MB in all",
        f"- total cost: {CostCard.from_dict(report['costs']['total']).summary()}",
        f"- bundle: {report['bundle']}",
        "",
        "| round | stage | val accuracy | epsilon | MB down | MB up | clients | client CPU-s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['round']} | {r.get('stage') or '-'} | {_fmt(r['val_accuracy'])} | "
        f"{_fmt(r['epsilon'])} | "
        f"{r['bytes_down'] / 1e6:.3f} | {r['bytes_up'] / 1e6:.3f} | {len(r['answered'])} | "
        f"{r['client_cpu_s']:.1f} |"
        for r in rounds
    ]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plots = _plots(run_dir, rounds)
    body = (
        "".join(
            f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            for name, png in plots.items()
        )
        or "<p class=\"note\">The plots need matplotlib: pip install 'frugalml[report]'</p>"
    )
    table = html.escape("\n".join(lines))
    (run_dir / "report.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>federated run</title>{body}<pre>{table}</pre>",
        encoding="utf-8",
    )


def _plots(run_dir: Path, rounds: list[dict[str, Any]]) -> dict[str, bytes]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    x = [r["round"] for r in rounds]
    series = {
        "accuracy": ("validation accuracy", [r["val_accuracy"] or np.nan for r in rounds]),
        "bytes": (
            "MB per round (down + up)",
            [(r["bytes_down"] + r["bytes_up"]) / 1e6 for r in rounds],
        ),
    }
    out = {}
    for name, (label, y) in series.items():
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(x, y, marker="o")
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        out[name] = buffer.getvalue()
        (run_dir / f"{name}.png").write_bytes(out[name])
    return out


def _rounds(settings: dict[str, Any]) -> str:
    warm = settings.get("head_rounds") or 0
    rung = f"{settings['rounds']} rounds"
    return f"{warm} head warm-up rounds + {rung}" if warm else rung


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
