"""A desk served: `/v1/desk/ask` beside `/v1/predict`, its metrics, and the chat page in a
real headless Chromium."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from frugalml.apps import desk as desk_app
from frugalml.data import DEMO_INTENTS, out_of_scope_texts
from tests.serve.harness import serving, wait_ready

QUESTIONS = ["my card has not arrived yet", "Where can I find my IBAN?"]


@pytest.fixture(scope="module")
def desk_folder(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return desk_app.build(
        DEMO_INTENTS,
        answers=desk_app.DEMO_ANSWERS,
        knowledge=desk_app.DEMO_FAQ,
        oos=out_of_scope_texts(),
        out=tmp_path_factory.mktemp("served") / "desk",
        strategies=["frozen_probe"],
        options={"frozen_probe": {"backbone": str(tiny_backbone), "cache": False}},
        ship="none",
    ).folder


def test_ask_is_served_like_predict_with_its_route_counts(
    desk_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESK_KEY", "a-key-that-is-long-enough")
    auth = {"Authorization": "Bearer a-key-that-is-long-enough"}
    local = desk_app.load(desk_folder).ask(QUESTIONS, k=2)
    with serving(desk_folder, api_key_env="DESK_KEY") as url:
        wait_ready(url)
        body = {"texts": QUESTIONS, "k": 2}
        response = httpx.post(url + "/v1/desk/ask", json=body, headers=auth)
        assert response.status_code == 200, response.text
        replies = response.json()["replies"]
        assert [r["route"] for r in replies] == [r.route for r in local]
        assert [r["intent"] for r in replies] == [r.intent for r in local]
        assert [len(r["evidence"]) for r in replies] == [2, 2]
        assert replies[0]["confidence"] == pytest.approx(local[0].confidence, abs=1e-5)
        # thresholds at ask time
        forced = {"texts": QUESTIONS[:1], "thresholds": {"oos": -1e9, "answerable": 1.0}}
        again = httpx.post(url + "/v1/desk/ask", json=forced, headers=auth).json()
        assert again["replies"][0]["route"] == "handoff"
        bad = {"texts": QUESTIONS, "thresholds": {"confidence": 2}}
        refused = httpx.post(url + "/v1/desk/ask", json=bad, headers=auth)
        assert refused.status_code == 422 and "between 0 and 1" in refused.text
        assert httpx.post(url + "/v1/desk/ask", json=body).status_code == 401
        predicted = httpx.post(url + "/v1/predict", json={"texts": QUESTIONS}, headers=auth)
        assert [p["label"] for p in predicted.json()["predictions"]] == [r.intent for r in local]
        metrics = httpx.get(url + "/metrics", headers=auth).text
        counted = {route: 0.0 for route in ("answer", "knowledge", "handoff")}
        for reply in replies + again["replies"]:
            counted[reply["route"]] += 1
        for route, n in counted.items():
            assert f'desk_routes_total{{route="{route}"}} {n}' in metrics
        assert 'frugalml_http_requests_total{code="200",route="/v1/desk/ask"}' in metrics


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height, and how many distinct RGB colours the first rows hold (blank pages: 1)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _depth, colour = struct.unpack(">IIBB", data[16:26])
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    channels = {2: 3, 6: 4}[colour]
    stride = width * channels + 1
    seen = set()
    for row in range(0, height, 7):
        line = raw[row * stride + 1 : (row + 1) * stride]  # filtered bytes still vary with content
        seen.update(line[i : i + 3] for i in range(0, len(line), channels * 13))
    return width, height, len(seen)


@pytest.mark.skipif(
    _chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_the_chat_page_answers_in_a_headless_browser(desk_folder: Path, tmp_path: Path) -> None:
    browser = _chromium()
    assert browser is not None
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
    ]
    with serving(desk_folder) as url:
        wait_ready(url)
        page = url + "/desk?" + "&".join("q=" + quote(q) for q in QUESTIONS)
        dom = subprocess.run(
            [browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
        )
        shot = tmp_path / "desk.png"
        subprocess.run(
            [browser, *flags, "--window-size=900,700", f"--screenshot={shot}", page],
            capture_output=True,
            timeout=120,
        )
    html: Any = dom.stdout
    assert 'data-answered="2"' in html, dom.stderr[-2000:]
    for question in QUESTIONS:
        assert question in html
    assert html.count('class="route ') == 2  # a route badge for each reply
    assert "similarity" in html  # the evidence list
    width, height, colours = _png_size_and_colours(shot)
    assert (width, height) == (900, 700)
    assert colours > 20  # text, badges and bubbles, not a blank page
