"""The monitor's pictures: a self-contained HTML report and the data behind the live page.

Charts are drawn by plotly.js, which ships inside the `plotly` PyPI package: the report
inlines it and the live page serves it from the package, so nothing is fetched from a CDN.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from frugalml.apps.monitor import store
from frugalml.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine


def plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ConfigError(
            "the monitor's charts need the 'monitor' extra: pip install 'frugalml[monitor]'"
        ) from None
    return str(get_plotlyjs())


def dashboard_data(engine: Engine, size_s: int, top: int = 6) -> dict[str, Any]:
    """Per-topic series (window start, n, negative share) and the latest alerts, as JSON.
    Charted: the topics alerted on most recently, then the busiest, `top` in all."""
    w, a = store.windows, store.alerts
    with engine.connect() as c:
        alerted = (
            c.execute(
                select(a.c.topic)
                .where(a.c.topic != "*model*")
                .group_by(a.c.topic)
                .order_by(func.max(a.c.time).desc(), a.c.topic)
                .limit(top)
            )
            .scalars()
            .all()
        )
        busiest = (
            c.execute(
                select(w.c.topic)
                .where(w.c.size_s == size_s)
                .group_by(w.c.topic)
                .order_by(func.sum(w.c.n).desc(), w.c.topic)
                .limit(top)
            )
            .scalars()
            .all()
        )
        charted = list(dict.fromkeys([*alerted, *busiest]))[:top]
        series = {}
        for topic in charted:
            rows = c.execute(
                select(w.c.start, w.c.n, w.c.negatives)
                .where(w.c.topic == topic, w.c.size_s == size_s)
                .order_by(w.c.start)
            ).all()
            series[topic] = {
                "time": [_iso(r.start) for r in rows],
                "n": [r.n for r in rows],
                "share": [r.negatives / r.n if r.n else None for r in rows],
            }
        alerts = [
            {**dict(r), "time_iso": _iso(r.time), "evidence": json.loads(r.evidence)}
            for r in c.execute(select(a).order_by(a.c.time.desc()).limit(200)).mappings()
        ]
    return {"window_s": size_s, "series": series, "alerts": alerts}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


FIGURE_JS = """
function drawMonitor(div, data) {
  const traces = [];
  for (const [topic, s] of Object.entries(data.series)) {
    traces.push({x: s.time, y: s.share, name: topic + ' negative share', mode: 'lines',
                 legendgroup: topic, yaxis: 'y'});
    traces.push({x: s.time, y: s.n, name: topic + ' volume', type: 'bar', opacity: 0.4,
                 legendgroup: topic, yaxis: 'y2', showlegend: false});
  }
  const marks = data.alerts.filter(a => a.topic in data.series);
  traces.push({x: marks.map(a => a.time_iso), y: marks.map(a => a.evidence.window ?
               a.evidence.window.share.observed : null), mode: 'markers', name: 'alerts',
               text: marks.map(a => a.message), marker: {symbol: 'x', size: 12, color: 'red'},
               yaxis: 'y'});
  Plotly.react(div, traces, {
    height: 520, margin: {t: 30},
    yaxis: {title: 'negative share', domain: [0.4, 1], range: [0, 1]},
    yaxis2: {title: 'texts per window', domain: [0, 0.33]},
    xaxis: {anchor: 'y2'}, legend: {orientation: 'h'}
  });
}
"""


def alerts_table(alerts: list[dict[str, Any]]) -> str:
    rows = []
    for alert in alerts:
        texts = alert["evidence"].get("texts", [])
        evidence = "".join(
            f"<li>{t['negative']:.2f} — {html.escape(t.get('text') or 'text not kept: ' + t['id'])}"
            "</li>"
            for t in texts
        )
        rows.append(
            f"<tr><td>{html.escape(alert['time_iso'])}</td><td>{html.escape(alert['topic'])}</td>"
            f"<td>{html.escape(alert['kind'])}</td><td>{html.escape(alert['message'])}"
            f"<ul>{evidence}</ul></td></tr>"
        )
    return (
        "<table><tr><th>time (UTC)</th><th>topic</th><th>kind</th><th>evidence</th></tr>"
        + "".join(rows)
        + "</table>"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
)


def write_report(engine: Engine, out: Path, size_s: int, top: int = 6) -> Path:
    data = dashboard_data(engine, size_s, top)
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>frugalml monitor report</title><style>{STYLE}</style>
<script>{plotly_js()}</script><script>{FIGURE_JS}</script></head><body>
<h1>Negative sentiment by topic</h1>
<p>{len(data["series"])} busiest topics, {size_s // 60}-minute windows; red marks are alerts.</p>
<div id="chart"></div>
<h2>Alerts</h2>{alerts_table(data["alerts"])}
<script>drawMonitor('chart', {json.dumps(data, default=float)});</script>
</body></html>"""
    out.write_text(page, encoding="utf-8")
    return out


LIVE_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>frugalml monitor</title><style>{style}</style>
<script src="/monitor/plotly.js"></script><script>{figure}</script></head><body>
<h1>Negative sentiment by topic (live)</h1><p id="status">loading…</p>
<div id="chart"></div><h2>Alerts</h2><div id="alerts"></div>
<script>
async function refresh() {{
  const answer = await fetch('/monitor/data' + window.location.search);
  const data = await answer.json();
  drawMonitor('chart', data);
  document.getElementById('alerts').innerHTML = data.table;
  document.getElementById('status').textContent =
    Object.keys(data.series).length + ' topics, ' + data.alerts.length + ' alerts, updated ' +
    new Date().toISOString();
}}
refresh(); setInterval(refresh, 10000);
</script></body></html>"""


def live_page() -> str:
    return LIVE_PAGE.format(style=STYLE, figure=FIGURE_JS)
