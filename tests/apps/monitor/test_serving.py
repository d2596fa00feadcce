"""The monitor on `frugalml serve`: events over HTTP, metrics, the live page in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from frugalml.apps.monitor import demo
from tests.serve.harness import serving, wait_ready


@pytest.fixture
def monitor_folder(sentiment_bundle: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "monitor"
    folder.mkdir()
    shutil.copytree(sentiment_bundle, folder / "model")
    (folder / "watchlist.json").write_text(json.dumps(demo.watchlist()))
    config = {
        "app": "monitor",
        "model": "model",
        "watchlist": "watchlist.json",
        "store": "monitor.db",
        "warmup": 100,  # texts per topic before detection: a short replay suffices
    }
    (folder / "app.json").write_text(json.dumps(config))
    return folder


def test_events_posted_to_the_server_are_scored_stored_and_alerted_on(
    monitor_folder: Path, tmp_path: Path
) -> None:
    rows = demo.stream(1200)
    with serving(monitor_folder) as url:
        wait_ready(url)
        answers = [
            httpx.post(
                url + "/v1/monitor/events", json={"events": rows[i : i + 200]}, timeout=60
            ).json()
            for i in range(0, len(rows), 200)
        ]
        assert sum(a["accepted"] for a in answers) == 1200
        again = httpx.post(url + "/v1/monitor/events", json={"events": rows[:10]}).json()
        assert (again["accepted"], again["duplicates"]) == (0, 10)
        bad = httpx.post(url + "/v1/monitor/events", json={"events": [{"id": "x"}, 3]}).json()
        assert [b["where"] for b in bad["bad"]] == ["events[0]", "events[1]"]
        assert httpx.post(url + "/v1/monitor/events", json={"texts": []}).status_code == 422
        assert any("Kestrel Oyj" in m for a in answers for m in a["alerts"])
        metrics = httpx.get(url + "/metrics").text
        assert 'monitor_events_total{outcome="new"} 1200.0' in metrics
        assert 'monitor_alerts_total{kind="negative_cusum",topic="Kestrel Oyj"}' in metrics
        data = httpx.get(url + "/monitor/data").json()
        assert "Kestrel Oyj" in data["series"] and data["alerts"]
        assert "Plotly" in httpx.get(url + "/monitor/plotly.js").text[:5000]
        page = httpx.get(url + "/monitor").text
        assert '<script src="/monitor/plotly.js">' in page
        _screenshot(url + "/monitor", tmp_path / "monitor.png")


def _screenshot(url: str, out: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): no screenshot")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,900",
            "--virtual-time-budget=10000",
            f"--screenshot={out}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    from PIL import Image

    with Image.open(out) as image:
        colours = image.convert("RGB").getcolors(1_000_000) or []
    assert len(colours) > 50  # a drawn chart, not a blank page
