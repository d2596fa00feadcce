"""The run report: JSON for machines, Markdown for people, and one self-contained HTML page.

The HTML embeds its plot as a data URI and loads nothing from anywhere, so it can be mailed
or archived as a single file. The plot needs matplotlib (the 'report' extra); without it
the page is still written, with a note where the plot would be.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from frugalml.costs import CostCard
from frugalml.ladder.frontier import Axis, FrontierSummary, frontier_summary, ms_per_text
from frugalml.ladder.ownership import human
from frugalml.ladder.run import Candidate, LadderResult

_AXES: tuple[tuple[Axis, str], ...] = (("train", "training-cost"), ("inference", "inference-cost"))


def leaderboard_rows(result: LadderResult, metric: str) -> list[dict[str, Any]]:
    """One flat row per candidate, in ladder order; the chosen one and frontier members marked,
    and the chosen one's test score flagged when it misses the bar beyond its interval."""
    marks = frontier_marks(frontier_summary(result, metric))
    rows = []
    for c in result.candidates:
        low, high = c.val.interval(metric)
        test = c.test.estimate(metric) if c.test else None
        rows.append(
            {
                "strategy": c.strategy,
                "chosen": c is result.chosen,
                "frontier": marks.get(c.strategy, ""),
                f"val_{metric}": c.val.metric(metric),
                f"val_{metric}_ci": [low, high],
                "val_accuracy": c.val.accuracy,
                "val_ece": c.ece,
                "test_accuracy": c.test.accuracy if c.test else None,
                "test_macro_f1": c.test.macro_f1 if c.test else None,
                f"test_{metric}": test[0] if test else None,
                f"test_{metric}_ci": list(test[1]) if test else None,
                "misses_bar_on_test": c is result.chosen and result.shortfall is not None,
                "train_wall_s": c.cost.wall_s,
                "train_cpu_s": c.cost.cpu_s,
                "train_usd": c.cost.usd,
                "train_kwh": c.cost.energy_kwh,
                "peak_rss_mb": c.cost.peak_rss_mb,
                "forecast_over_actual": c.forecast_over_actual(),
                "latency_p50_ms": c.speed.latency_p50_ms,
                "latency_p95_ms": c.speed.latency_p95_ms,
                "throughput_per_s": c.speed.throughput_per_s,
                "ms_per_text": ms_per_text(c),
            }
        )
    return rows


def _ece(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def frontier_marks(frontier: FrontierSummary) -> dict[str, str]:
    """'train', 'inference' or 'both' for each candidate on a frontier."""
    train, inference = set(frontier["train"]["members"]), set(frontier["inference"]["members"])
    return {
        name: "both" if name in train & inference else "train" if name in train else "inference"
        for name in train | inference
    }


def report_data(result: LadderResult, *, metric: str, header: dict[str, Any]) -> dict[str, Any]:
    """Everything report.json holds; the Markdown and HTML pages are views of it."""
    return {
        **header,
        "metric": metric,
        "chosen": result.chosen.strategy,
        "reason": result.reason,
        "shortfall": result.shortfall.to_dict() if result.shortfall else None,
        "skipped": result.skipped,
        "forecast_cost": {**result.forecast_cost, "share_of_ladder_cpu": result.forecast_share()},
        "leaderboard": leaderboard_rows(result, metric),
        "frontier": frontier_summary(result, metric),
        "candidates": [c.summary() for c in result.candidates],
    }


def write_reports(
    run_dir: Path, result: LadderResult, *, metric: str, header: dict[str, Any]
) -> tuple[Path, Path, Path]:
    """Write report.json, report.md, report.html (and frontier.png); return the three reports."""
    data = report_data(result, metric=metric, header=header)
    json_path, md_path = run_dir / "report.json", run_dir / "report.md"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(_markdown(data, result, metric), encoding="utf-8")
    return json_path, md_path, write_html(run_dir, result, metric=metric, header=header)


# -- Markdown ------------------------------------------------------------------------
def _markdown(data: dict[str, Any], result: LadderResult, metric: str) -> str:
    lines = [
        f"# frugalml run: {data.get('data', '')}",
        "",
        f"**Chosen: `{result.chosen.strategy}`** — {result.reason}.",
        "",
        *([f"⚠ {result.shortfall.message()}", ""] if result.shortfall else []),
        f"Data: {data.get('n_train')} train / {data.get('n_val')} validation / "
        f"{data.get('n_test')} test examples, {data.get('n_classes')} classes, "
        f"seed {data.get('seed')}.",
        "",
        "## Leaderboard",
        "",
        f"| strategy | frontier | val {metric} (95% CI) | val ECE | test {metric} | train wall s | "
        "train CPU-s | train $ | p50 ms (b=1) | texts/s (b=32) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["leaderboard"]:
        low, high = row[f"val_{metric}_ci"]
        test = _test_cell(row, metric)
        mark = " ✔" if row["chosen"] else ""
        lines.append(
            f"| {row['strategy']}{mark} | {row['frontier']} | "
            f"{row[f'val_{metric}']:.3f} ({low:.3f}–{high:.3f}) | "
            f"{_ece(row['val_ece'])} | {test} | {row['train_wall_s']:.1f} | "
            f"{row['train_cpu_s']:.1f} | "
            f"{row['train_usd']:.5f} | {row['latency_p50_ms']:.1f} | "
            f"{row['throughput_per_s']:.0f} |"
        )
    for name, why in result.skipped.items():
        lines.append(f"| {name} | | skipped: {why} | | | | | | | |")
    lines += ["", *_next_rung_markdown(data["frontier"])]
    lines += ownership_markdown(data.get("ownership"))
    lines += ["## Cost cards", ""]
    share = result.forecast_share()
    if share is not None and result.forecast_cost.get("cpu_s"):
        startup = result.forecast_cost.get("startup_cpu_s", 0.0)
        lines += [
            f"Forecasting cost {result.forecast_cost['cpu_s'] - startup:.1f} CPU-s, "
            f"{share:.1%} of the ladder's CPU (and {startup:.1f} CPU-s of one-off start-up: "
            "imports and a first model load, which the rungs would have paid).",
            "",
        ]
    lines += [_cost_card(c) for c in result.candidates]
    return "\n".join(lines) + "\n"


def _test_cell(row: dict[str, Any], metric: str) -> str:
    """The test score, '⚠' when it misses the bar beyond its interval; '—' without a test set."""
    value = row[f"test_{metric}"]
    if value is None:
        return "—"
    return f"{value:.3f}" + (" ⚠" if row["misses_bar_on_test"] else "")


def _next_rung_markdown(frontier: FrontierSummary) -> list[str]:
    lines = []
    for axis, title in _AXES:
        part = frontier[axis]
        lines += [f"**Next rung on the {title} frontier** ({part['cost']}):", ""]
        lines += [f"- {step['sentence']}" for step in part["steps"]] or [
            f"- nothing dearer beats {', '.join(part['members'])}"
        ]
        lines.append("")
    return lines


def _cost_rows(card: CostCard) -> list[tuple[str, str]]:
    return [
        ("wall time", f"{card.wall_s:.2f} s"),
        ("CPU time", f"{card.cpu_s:.2f} s"),
        ("peak memory", f"{card.peak_rss_mb:.0f} MB"),
        ("energy", f"{card.energy_kwh * 1000:.4f} Wh — {card.energy_source}"),
        ("money", f"${card.usd:.6f} — {card.price_basis}"),
        ("FLOPs", f"{card.flops:.3g}" if card.flops else "n/a (not a transformer)"),
        ("GPU time", f"{card.device_s:.2f} s" if card.device_s else "no GPU used"),
    ]


def _forecast_rows(c: Candidate) -> list[tuple[str, str]]:
    """The forecast beside the card: each figure and its forecast ÷ actual."""
    f = c.forecast or {}
    ratios = c.forecast_over_actual()
    rows = []
    for key, what, unit in (
        ("wall_s", "wall time", "s"),
        ("cpu_s", "CPU time", "s"),
        ("peak_rss_mb", "peak memory", "MB"),
    ):
        if f.get(key) is not None and ratios[key] is not None:
            value = f"{f[key]:.0f} MB" if unit == "MB" else f"{f[key]:.2f} s"
            rows.append((f"forecast {what}", f"{value} (÷ actual {ratios[key]:.2f})"))
    return rows


def _cost_card(c: Candidate) -> str:
    body = "\n".join(f"| {k} | {v} |" for k, v in [*_cost_rows(c.cost), *_forecast_rows(c)])
    return f"### {c.strategy}\n\n| | |\n|---|---|\n{body}\n"


def ownership_markdown(ownership: dict[str, Any] | None) -> list[str]:
    """Total cost (training + compression + serving) of every option at each volume, the
    cheapest marked, and the break-even volumes."""
    if not ownership or not ownership["options"]:
        return []
    head, rows = _ownership_cells(ownership)
    lines = ["## Cost of ownership", "", _ownership_lead(ownership), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "**Break-even volumes:**", ""]
    lines += [f"- {b['sentence']}" for b in ownership["break_evens"]] or [
        f"- none: {ownership['cheapest'][0]} is the cheapest at every volume"
    ]
    return [*lines, ""]


def _ownership_lead(ownership: dict[str, Any]) -> str:
    volume = ownership["volume"]
    priced = (
        f"The choice was priced for {human(volume)} predictions; "
        if volume is not None
        else "Without --volume the choice was priced on training alone; "
    )
    return (
        f"{priced}shipped: `{ownership['chosen']}`. Totals in USD: building it once "
        "(training, plus compression for a shipped format) + serving at the CPU each "
        "prediction took at the throughput batch. ★ marks the cheapest eligible option at each "
        "volume (the chosen rung's formats and other rungs meeting the bar; without --target "
        "the best rung is chosen whatever it costs); other rungs are priced uncompressed."
    )


def _ownership_cells(ownership: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    volumes = ownership["volumes"]
    head = ["option", "build $", "CPU-ms/prediction", *[f"{human(v)} predictions" for v in volumes]]
    rows = []
    for option in ownership["options"]:
        name = option["name"] + (" ✔" if option["name"] == ownership["chosen"] else "")
        name += "" if option.get("eligible", True) else " (not eligible)"
        totals = [
            f"{total:.4g}" + (" ★" if ownership["cheapest"][i] == option["name"] else "")
            for i, total in enumerate(option["totals_usd"])
        ]
        rows.append(
            [name, f"{option['fixed_usd']:.4g}", f"{option['cpu_ms_per_prediction']:.2f}", *totals]
        )
    return head, rows


# -- HTML ----------------------------------------------------------------------------
_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1f24; }
h1 { font-size: 1.5rem; word-break: break-all; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; }
th { background: #f6f8fa; }
td { white-space: nowrap; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
td.skipped { text-align: left; color: #57606a; }
tr.chosen td { background: #fff4d6; font-weight: 600; }
.chosen-box { background: #fff4d6; border-left: 4px solid #d4a017; padding: .6rem 1rem; }
.warning { background: #ffebe9; border-left: 4px solid #cf222e; padding: .6rem 1rem; }
.note { color: #57606a; }
.cards { display: flex; flex-wrap: wrap; gap: 0 2rem; }
.cards td { text-align: left; }
img { max-width: 100%; height: auto; }
"""

# Lets a headless browser check that the embedded plot decodes (tests read data-plot-width).
_SCRIPT = """
window.addEventListener("load", function () {
  var img = document.getElementById("frontier-plot");
  document.body.setAttribute("data-plot-width", img ? String(img.naturalWidth) : "0");
});
"""


def write_html(run_dir: Path, result: LadderResult, *, metric: str, header: dict[str, Any]) -> Path:
    """Write run_dir/report.html, and run_dir/frontier.png when matplotlib is installed."""
    data = report_data(result, metric=metric, header=header)
    png = _frontier_png(result, data["frontier"], metric)
    if png is not None:
        (run_dir / "frontier.png").write_bytes(png)
    path = run_dir / "report.html"
    path.write_text(_html(data, result, metric, png), encoding="utf-8")
    return path


def _html(data: dict[str, Any], result: LadderResult, metric: str, png: bytes | None) -> str:
    e = html.escape
    title = f"frugalml run: {data.get('data', '')}"
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="chosen-box"><strong>Chosen: <code>{e(result.chosen.strategy)}</code></strong>'
        f" — {e(result.reason)}.</p>",
        *(
            [f'<p class="warning">⚠ {e(result.shortfall.message())}</p>']
            if result.shortfall
            else []
        ),
        f"<p>Data: {e(str(data.get('n_train')))} train / {e(str(data.get('n_val')))} validation"
        f" / {e(str(data.get('n_test')))} test examples, {e(str(data.get('n_classes')))} classes,"
        f" seed {e(str(data.get('seed')))}.</p>",
        *[f'<p class="note">{e(str(note))}</p>' for note in data.get("notes") or []],
        "<h2>Leaderboard</h2>",
        _html_leaderboard(data, result, metric),
        "<h2>Cost and quality</h2>",
        _html_plot(png, metric),
        _html_next_rungs(data["frontier"]),
        _html_ownership(data.get("ownership")),
        "<h2>Cost cards</h2>",
        '<div class="cards">',
        *[_html_cost_card(c) for c in result.candidates],
        "</div>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(title)}</title>\n<style>{_CSS}</style>\n<script>{_SCRIPT}</script>\n"
        "</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def _html_ownership(ownership: dict[str, Any] | None) -> str:
    if not ownership or not ownership["options"]:
        return ""
    e = html.escape
    head, rows = _ownership_cells(ownership)
    table = "<table>\n<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>\n"
    table += "\n".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    items = [b["sentence"] for b in ownership["break_evens"]] or [
        f"none: {ownership['cheapest'][0]} is the cheapest at every volume"
    ]
    return (
        f"<h2>Cost of ownership</h2>\n<p>{e(_ownership_lead(ownership))}</p>\n{table}\n</table>"
        "\n<h3>Break-even volumes</h3>\n<ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>"
    )


def _html_leaderboard(data: dict[str, Any], result: LadderResult, metric: str) -> str:
    b = result.chosen.speed.throughput_batch
    heads = [
        "strategy", "frontier", f"val {metric} (95% CI)", "val ECE", f"test {metric}",
        "train wall s", "train CPU-s", "train $", "energy Wh",
        "p50 ms (b=1)", f"ms/text (b={b})", f"texts/s (b={b})",
    ]  # fmt: skip
    rows = [_html_row(row, metric) for row in data["leaderboard"]]
    rows += [
        f'<tr><td>{html.escape(name)}</td><td></td><td class="skipped" colspan="{len(heads) - 2}">'
        f"skipped: {html.escape(why)}</td></tr>"
        for name, why in result.skipped.items()
    ]
    # a non-breaking hyphen keeps "CPU-s" whole when a header wraps
    head = "".join(f"<th>{html.escape(h).replace('-', '&#8209;')}</th>" for h in heads)
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _html_row(row: dict[str, Any], metric: str) -> str:
    low, high = row[f"val_{metric}_ci"]
    test = _test_cell(row, metric)
    cells = [
        row["strategy"] + (" ✔" if row["chosen"] else ""),
        row["frontier"],
        f"{row[f'val_{metric}']:.3f} ({low:.3f}–{high:.3f})",
        _ece(row["val_ece"]),
        test,
        f"{row['train_wall_s']:.1f}",
        f"{row['train_cpu_s']:.1f}",
        f"{row['train_usd']:.6f}",
        f"{row['train_kwh'] * 1000:.4f}",
        f"{row['latency_p50_ms']:.2f}",
        f"{row['ms_per_text']:.3f}",
        f"{row['throughput_per_s']:.0f}",
    ]
    css = ' class="chosen"' if row["chosen"] else ""
    return f"<tr{css}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>"


def _html_plot(png: bytes | None, metric: str) -> str:
    if png is None:
        return (
            '<p class="note">The cost–quality plot needs matplotlib: '
            "<code>pip install 'frugalml[report]'</code></p>"
        )
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    alt = f"validation {metric} against training cost, with the training-cost frontier"
    return f'<img id="frontier-plot" src="{uri}" alt="{html.escape(alt)}">'


def _html_next_rungs(frontier: FrontierSummary) -> str:
    parts = []
    for axis, title in _AXES:
        part = frontier[axis]
        items = [step["sentence"] for step in part["steps"]] or [
            f"nothing dearer beats {', '.join(part['members'])}"
        ]
        parts.append(
            f"<h3>Next rung on the {title} frontier <small>({html.escape(part['cost'])})</small>"
            "</h3>\n<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"
        )
    return "\n".join(parts)


def _html_cost_card(c: Candidate) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in [*_cost_rows(c.cost), *_forecast_rows(c)]
    )
    return f"<div><h3>{html.escape(c.strategy)}</h3><table>{rows}</table></div>"


# -- plot ----------------------------------------------------------------------------
def _frontier_png(result: LadderResult, frontier: FrontierSummary, metric: str) -> bytes | None:
    """Validation metric (95% CI bars) against training $, frontier drawn, chosen ringed."""
    try:  # optional: the 'report' extra
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(8, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without pyplot's global state
    ax = fig.add_subplot()
    _draw_points(ax, result.candidates, metric)
    _draw_frontier(ax, result.candidates, frontier["train"]["members"], metric)
    chosen = result.chosen
    ax.scatter(
        [chosen.cost.usd],
        [chosen.val.metric(metric)],
        s=220,
        facecolors="none",
        edgecolors="#c0392b",
        linewidths=2,
        label="chosen: " + chosen.strategy.replace("$", r"\$"),  # legends parse mathtext
        zorder=3,
    )
    log = all(c.cost.usd > 0 for c in result.candidates)
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.08)
    ax.set_xlabel("training cost (USD" + (", log scale)" if log else ")"))
    ax.set_ylabel(f"validation {metric} (95% CI)")
    ax.grid(True, which="both", alpha=0.3)
    fig.legend(loc="outside upper center", ncols=3, fontsize=9, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version, no URL
    return buffer.getvalue()


def _draw_frontier(ax: Any, candidates: list[Candidate], names: list[str], metric: str) -> None:
    """A staircase through the members, run on to the dearest candidate: the best so far."""
    by_name = {c.strategy: c for c in candidates}
    xs = [by_name[name].cost.usd for name in names]
    ys = [by_name[name].val.metric(metric) for name in names]
    xs.append(max(c.cost.usd for c in candidates))
    ys.append(ys[-1])
    ax.step(xs, ys, where="post", color="#d4a017", lw=2, label="training-cost frontier", zorder=1)


def _draw_points(ax: Any, candidates: list[Candidate], metric: str) -> None:
    for c in candidates:
        x, y = c.cost.usd, c.val.metric(metric)
        low, high = c.val.interval(metric)
        # the bootstrap interval need not contain the point estimate; bars cannot be negative
        yerr = [[max(0.0, y - low)], [max(0.0, high - y)]]
        label = "candidate" if c is candidates[0] else None  # one legend entry for all
        ax.errorbar([x], [y], yerr=yerr, fmt="o", color="#2f6db5", capsize=4, label=label, zorder=2)
        ax.annotate(
            c.strategy,
            (x, y),
            xytext=(7, 7),
            textcoords="offset points",
            fontsize=9,
            parse_math=False,  # a '$' in a name is text, not mathtext
        )
