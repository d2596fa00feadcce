"""`frugalml serve` through real HTTP on 127.0.0.1: every status code, batching, metrics
parsed with Prometheus' own parser, hot reload under traffic, and a SIGTERM drain of a real
server process. Most tests serve a TF-IDF bundle (fits in a second); one serves int8 ONNX."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx
from prometheus_client.parser import text_string_to_metric_families

import frugalml
from frugalml import client
from frugalml.bundle import Bundle, save_bundle, update_manifest
from frugalml.config import SplitConfig
from frugalml.costs import Prices
from frugalml.data.split import Splits
from frugalml.errors import ConfigError
from frugalml.serve import ServeSettings
from frugalml.serve.batching import length_buckets
from frugalml.serve.connections import ConnectionLimits, GuardedH11Protocol, GuardedProtocol
from frugalml.serve.settings import available_cpus, settings_from_options
from tests.serve.harness import serving, wait_ready

TEXTS = ["my card never arrived", "how do I change my pin", "the atm kept my cash", "refund?"]


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundles(demo_splits: Splits, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two TF-IDF bundles with different weights (different splits), for reload; native
    (scikit-learn) ones: ONNX bundles are served in `test_an_int8_onnx_bundle_...`."""
    root = tmp_path_factory.mktemp("serve")
    first, second = (
        frugalml.fit(
            demo_splits.train,
            out=root / f"run{seed}",
            strategies=["tfidf"],
            split=SplitConfig(seed=seed),
            ship="none",
        ).run_dir
        / "bundle"
        for seed in (0, 1)
    )
    return first, second


@pytest.fixture(scope="module")
def bundle(bundles: tuple[Path, Path]) -> Path:
    return bundles[0]


@pytest.fixture(scope="module")
def url(bundle: Path) -> Iterator[str]:
    """One small-limits server shared by the contract tests."""
    with serving(bundle, max_texts=4, max_chars=50, max_body_bytes=2_000) as base:
        wait_ready(base)
        yield base


class SlowPredictor:
    """The real predictor, `delay` seconds slower per call after warm-up, counting its calls."""

    WARMUP_CALLS = 2  # as ServedModel.warm_up makes

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay, self.calls = inner, delay, 0

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.calls > self.WARMUP_CALLS:
            time.sleep(self.delay)
        return self.inner.predict_proba(texts)  # type: ignore[no-any-return]


def slow_loader(delay: float, gate: threading.Event | None = None) -> Callable[[Path], Bundle]:
    def load(path: Path) -> Bundle:
        if gate is not None:
            assert gate.wait(10)
        real = frugalml.load(path)
        return Bundle(real.path, real.manifest, SlowPredictor(real.predictor, delay))  # type: ignore[arg-type]

    return load


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    assert set(body) == {"code", "message", "item", "problems"}
    return body


def post_all(url: str, bodies: list[Any], headers: dict[str, str] | None = None) -> list[Any]:
    """Send every body at once (one thread each) and return the responses in order."""
    with httpx.Client(timeout=30) as http, ThreadPoolExecutor(len(bodies)) as pool:
        return list(
            pool.map(lambda b: http.post(url + "/v1/predict", json=b, headers=headers), bodies)
        )


def metrics(url: str, **headers: str) -> dict[str, Any]:
    text = httpx.get(url + "/metrics", headers=headers).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def metric(url: str, name: str, **labels: str) -> float:
    """One sample's value: a gauge, or a counter's `_total` (0 when not yet counted)."""
    family = metrics(url).get(name)
    samples = [] if family is None else family.samples
    return sum(
        s.value
        for s in samples
        if s.name in (name, name + "_total") and labels.items() <= s.labels.items()
    )


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll a condition the test can see (never a fixed sleep) until it holds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"condition not met after {timeout} s"
        time.sleep(0.005)


def wait_for_batches(url: str, count: int, timeout: float = 15.0) -> None:
    """Until the server has finished `count` inference batches (its own histogram says so)."""
    end = time.monotonic() + timeout
    while True:
        family = metrics(url).get("frugalml_inference_duration_seconds")
        done = sum(s.value for s in family.samples if s.name.endswith("_count")) if family else 0
        if done >= count:
            return
        assert time.monotonic() < end, f"{done} batches finished, not {count}, after {timeout} s"


def wait_for_metric(
    url: str, name: str, value: float, timeout: float = 15.0, **labels: str
) -> None:
    end = time.monotonic() + timeout
    while (got := metric(url, name, **labels)) != value:
        assert time.monotonic() < end, f"{name}{labels} is {got}, not {value}, after {timeout} s"
        time.sleep(0.02)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def send_part_of_a_body(url: str, *, declared: int = 1_000) -> socket.socket:
    """A client that sends a predict request's headers and the first bytes of its body."""
    sock = socket.create_connection(address(url), timeout=10)
    sock.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + b'{"texts": ["'
    )
    return sock


def dribble_until_closed(sock: socket.socket, byte: bytes = b"a", timeout: float = 15.0) -> bytes:
    """Send one byte every 0.1 s, as a slow client would, until the server closes the
    connection; return what it answered (b"" if it closed without a word)."""
    sock.settimeout(0.1)
    received = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            with contextlib.suppress(OSError):  # the server may close between our checks
                sock.sendall(byte)
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept a slow connection open for {timeout} s")


# -- 200 and the response contract ---------------------------------------------------------
def test_predict_answers_label_probabilities_and_model_version(url: str, bundle: Path) -> None:
    got = client.predict(url, TEXTS)
    expected = frugalml.load(bundle).predict(TEXTS)
    version = client.model_info(url)["version"]
    assert [p["label"] for p in got] == [e["label"] for e in expected]
    for p, e in zip(got, expected, strict=True):
        assert p["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["model_version"] == version


def test_model_info_has_the_manifest_summary_and_cost_card(url: str, bundle: Path) -> None:
    info = client.model_info(url)
    assert info["bundle"] == bundle.name  # not its path: clients need not see the disk
    assert str(bundle.parent) not in httpx.get(url + "/v1/model").text
    assert info["strategy"] == "tfidf"
    assert info["predictor"] == {"format": "native", "precision": "fp32"}
    assert info["train_cost"]["cpu_s"] > 0
    assert set(info["quality"]) >= {"val", "test"}
    assert {"predictions", "inference_cpu_s", "usd_per_1k_predictions"} <= set(info["serving"])
    assert httpx.get(url + "/livez").json() == {"status": "alive"}


# -- 422, 413: the input contract ----------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "code", "item", "says"),
    [
        ({"texts": []}, "empty", None, "empty"),
        ({"texts": ["ok", 7, None]}, "not_a_string", 1, "texts[1] is a number"),
        ({"texts": ["a"] * 5}, "too_many_items", None, "the limit is 4"),
        ({"texts": ["ok", "x" * 51]}, "text_too_long", 1, "51 characters; the limit is 50"),
        ({"texts": "one text"}, "not_a_list", None, "must be a JSON list"),
        ({"records": [{"age": 3}]}, "records_not_supported", None, "records are for tabular"),
        ({"texts": ["a"], "records": []}, "texts_and_records", None, "not both"),
        ({"text": ["a"]}, "unknown_field", None, "'text'"),
        ({}, "missing_field", None, "no 'texts'"),
        (["a"], "invalid_body", None, "JSON object"),
        (b'{"texts": ["ok", "bad \\ud800"]}', "invalid_text", 1, "lone surrogate"),
    ],
)
def test_bad_input_is_a_422_that_names_the_item_and_why(
    url: str, body: Any, code: str, item: int | None, says: str
) -> None:
    if isinstance(body, bytes):  # what a JSON library would not write
        response = httpx.post(url + "/v1/predict", content=body)
    else:
        response = httpx.post(url + "/v1/predict", json=body)
    assert response.status_code == 422
    got = error(response)
    assert (got["code"], got["item"]) == (code, item)
    assert says in got["message"]


def test_every_bad_item_is_listed_at_once(url: str) -> None:
    got = error(httpx.post(url + "/v1/predict", json={"texts": [1, "ok", "y" * 99, None]}))
    assert [(p["item"], p["code"]) for p in got["problems"]] == [
        (0, "not_a_string"),
        (2, "text_too_long"),
        (3, "not_a_string"),
    ]
    assert "(and 2 more)" in got["message"]


def test_invalid_json_is_a_422_not_a_500(url: str) -> None:
    for raw in (b"{not json", b"\xff\xfe", b"", b"[" * 1500):
        response = httpx.post(url + "/v1/predict", content=raw)
        assert response.status_code == 422
        assert error(response)["code"] == "invalid_json"


def test_a_body_over_the_limit_is_a_413_declared_or_streamed(url: str) -> None:
    big = b'{"texts": ["' + b"a" * 3_000 + b'"]}'
    declared = httpx.post(url + "/v1/predict", content=big)
    assert declared.status_code == 413
    assert error(declared)["code"] == "body_too_large"
    streamed = httpx.post(url + "/v1/predict", content=iter([big[:1500], big[1500:]]))
    assert streamed.status_code == 413  # chunked: no Content-Length to trust


def test_unknown_routes_answer_in_the_same_error_shape(url: str) -> None:
    assert error(httpx.get(url + "/nope"))["code"] == "not_found"
    assert error(httpx.get(url + "/v1/predict"))["code"] == "method_not_allowed"


# -- 401, 403 ------------------------------------------------------------------------------
def test_keys_guard_every_route_but_the_probes(
    bundle: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_API_KEY", "s3cret-api")
    monkeypatch.setenv("TEST_ADMIN_KEY", "s3cret-admin")
    with serving(bundle, api_key_env="TEST_API_KEY", admin_key_env="TEST_ADMIN_KEY") as base:
        wait_ready(base)  # the probes need no key
        assert httpx.get(base + "/livez").status_code == 200
        for method, path in [
            ("POST", "/v1/predict"),
            ("GET", "/v1/model"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/nope"),
        ]:
            missing = httpx.request(method, base + path)
            assert missing.status_code == 401, path
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert error(missing)["code"] == "unauthorized"
            wrong = httpx.request(method, base + path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 403, path
        with pytest.raises(client.ServeError) as refused:
            client.predict(base, TEXTS, api_key="wrong")
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
        assert len(client.predict(base, TEXTS, api_key="s3cret-api")) == len(TEXTS)
        assert len(client.predict(base, TEXTS, api_key="s3cret-admin")) == len(TEXTS)
        # reload takes the admin key only
        reload = httpx.post(
            base + "/v1/model/reload", headers={"Authorization": "Bearer s3cret-api"}
        )
        assert reload.status_code == 403
        assert "admin key" in error(reload)["message"]
        assert client.reload(base, str(bundles[1]), admin_key="s3cret-admin")["version"]


def test_reload_is_off_without_an_admin_key(url: str) -> None:
    response = httpx.post(url + "/v1/model/reload")
    assert response.status_code == 403
    assert error(response)["code"] == "reload_disabled"


# -- 429, 503 ------------------------------------------------------------------------------
def test_over_the_concurrency_cap_is_a_429(bundle: Path) -> None:
    with serving(
        bundle, loader=slow_loader(0.5), max_concurrency=2, max_batch=1, max_wait_ms=0
    ) as base:
        wait_ready(base)
        responses = post_all(base, [{"texts": ["hello"]}] * 5)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert error(refused)["code"] == "too_many_requests"


def test_a_full_queue_is_a_503_with_retry_after(bundle: Path) -> None:
    loaded: list[SlowPredictor] = []

    def loader(path: Path) -> Bundle:
        b = slow_loader(0.4)(path)
        loaded.append(b.predictor)  # type: ignore[arg-type]
        return b

    with serving(
        bundle, loader=loader, max_queue=2, max_batch=1, max_texts=1, max_wait_ms=0
    ) as base:
        wait_ready(base)
        with httpx.Client(timeout=30) as http, ThreadPoolExecutor(4) as pool:

            def send() -> httpx.Response:
                return http.post(base + "/v1/predict", json={"texts": ["hi"]})

            running = pool.submit(send)
            wait_until(lambda: loaded[0].calls > SlowPredictor.WARMUP_CALLS)  # in inference
            queued = [pool.submit(send) for _ in range(2)]
            wait_for_metric(base, "frugalml_queue_depth", 2)  # the queue is now full
            refused = send()
            assert [f.result().status_code for f in (running, *queued)] == [200, 200, 200]
    assert refused.status_code == 503
    assert error(refused)["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1


def test_a_request_that_would_miss_its_deadline_is_a_503(bundle: Path) -> None:
    with serving(bundle, loader=slow_loader(0.5), request_timeout_s=0.2, max_wait_ms=0) as base:
        wait_ready(base)
        timed_out = httpx.post(base + "/v1/predict", json={"texts": ["hi"]})
        assert timed_out.status_code == 503
        assert error(timed_out)["code"] == "deadline_exceeded"
        assert "retry-after" in timed_out.headers
        wait_for_batches(base, 1)  # that batch finished: the server knows it takes 0.5 s a text
        refused = httpx.post(base + "/v1/predict", json={"texts": ["hi"]})
        assert metric(base, "frugalml_queue_depth") == 0  # never queued
    assert refused.status_code == 503
    # Refused up front from the estimate: one that waited would be 'deadline_exceeded'.
    assert error(refused)["code"] == "deadline_unreachable"


# -- readiness -----------------------------------------------------------------------------
def test_ready_only_after_the_model_is_loaded_and_warmed_up(bundle: Path) -> None:
    gate = threading.Event()
    loaded: list[SlowPredictor] = []

    def loader(path: Path) -> Bundle:
        b = slow_loader(0.0, gate)(path)
        loaded.append(b.predictor)  # type: ignore[arg-type]
        return b

    with serving(bundle, loader=loader) as base:
        assert httpx.get(base + "/livez").status_code == 200
        not_ready = httpx.get(base + "/readyz")
        assert not_ready.status_code == 503
        assert error(not_ready)["code"] == "not_ready"
        early = httpx.post(base + "/v1/predict", json={"texts": ["hi"]})
        assert (early.status_code, early.headers["retry-after"]) == (503, "1")
        gate.set()
        wait_ready(base)
        assert loaded[0].calls == SlowPredictor.WARMUP_CALLS  # warmed up before turning ready
        assert httpx.post(base + "/v1/predict", json={"texts": ["hi"]}).status_code == 200


def wait_load_failed(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The /readyz error once loading has failed."""
    end = time.monotonic() + timeout
    while (r := httpx.get(url + "/readyz")).status_code == 503 and error(r)["code"] == "not_ready":
        assert time.monotonic() < end
        time.sleep(0.02)
    assert error(r)["code"] == "load_failed"
    return error(r)


def test_a_bundle_that_fails_to_load_fails_the_probes_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with serving(tmp_path) as base:
        assert "schema version" in wait_load_failed(base)["message"]
        assert httpx.get(base + "/livez").status_code == 503


# -- slow clients --------------------------------------------------------------------------
def test_slow_senders_hold_no_slot_that_other_clients_need(bundle: Path) -> None:
    # 8 clients send headers and then a body a byte at a time: with all 8 slots theirs, every
    # other client used to get 429 for as long as they kept sending.
    with serving(bundle, max_concurrency=8, body_timeout_s=60) as base:
        wait_ready(base)
        senders = [send_part_of_a_body(base) for _ in range(8)]
        stop = threading.Event()

        def dribble() -> None:
            while not stop.wait(0.1):
                for sender in senders:
                    sender.sendall(b"a")

        dribbler = threading.Thread(target=dribble)
        dribbler.start()
        try:
            wait_for_metric(base, "frugalml_predict_receiving", 8)
            responses = post_all(base, [{"texts": [t]} for t in TEXTS])
            assert metric(base, "frugalml_predict_receiving") == 8  # still sending
        finally:
            stop.set()
            dribbler.join()
            for sender in senders:
                sender.close()
    assert [r.status_code for r in responses] == [200] * len(TEXTS)


def test_a_body_not_in_by_its_deadline_is_a_408_and_the_connection_closes(bundle: Path) -> None:
    with serving(bundle, body_timeout_s=0.5) as base:
        wait_ready(base)
        started = time.monotonic()
        with send_part_of_a_body(base) as sender:
            answer = dribble_until_closed(sender)  # a byte every 0.1 s
        took = time.monotonic() - started
        assert metric(base, "frugalml_predict_accepted") == 0
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"body_timeout"' in answer
    assert took >= 0.5  # a deadline on the whole body, however steadily it trickles in


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_headers_not_in_by_their_deadline_close_the_connection(bundle: Path, parser: str) -> None:
    protocol = {"httptools": GuardedProtocol, "h11": GuardedH11Protocol}[parser]
    if parser == "httptools":
        pytest.importorskip("httptools")
    http = functools.partial(protocol, limits=ConnectionLimits(0.5, None))
    with serving(bundle, http=http) as base:
        wait_ready(base)
        for first in (b"", b"POST /v1/predict HTTP/1.1\r\nHost: test\r\nX-Slow: "):
            sock = socket.create_connection(address(base), timeout=10)
            sock.sendall(first)
            started = time.monotonic()
            assert dribble_until_closed(sock, b"" if not first else b"a") == b""
            assert time.monotonic() - started >= 0.4
            sock.close()
        # a keep-alive connection that answered a request gets the same deadline for the next
        sock = socket.create_connection(address(base), timeout=10)
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\nGET /livez HTTP/1.1\r\n")
        answer = dribble_until_closed(sock, b"X")
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.count(b"HTTP/1.1") == 1
        assert len(client.predict(base, TEXTS)) == len(TEXTS)  # complete requests still served


def test_a_client_that_hangs_up_mid_body_is_one_log_line_and_a_499(
    bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's: it does not propagate
    uvicorn_log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO), serving(bundle) as base:
            wait_ready(base)
            sender = send_part_of_a_body(base)
            wait_for_metric(base, "frugalml_predict_receiving", 1)
            sender.close()
            wait_for_metric(base, "frugalml_http_requests", 1, route="/v1/predict", code="499")
            assert metric(base, "frugalml_http_requests", code="500") == 0
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    gone = [r for r in caplog.records if "closed the connection" in r.getMessage()]
    assert [r.levelno for r in gone] == [logging.INFO]
    assert "12 bytes received" in gone[0].getMessage()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert all(r.exc_info is None for r in caplog.records)


def test_connections_from_one_address_are_capped(bundle: Path) -> None:
    with serving(bundle, max_connections_per_client=2) as base:
        wait_ready(base)
        held = []
        for _ in range(2):  # two keep-alive connections the server has surely counted
            sock = socket.create_connection(address(base), timeout=10)
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            held.append(sock)
        refused = httpx.post(base + "/v1/predict", json={"texts": ["hi"]})
        assert refused.status_code == 429
        assert error(refused)["code"] == "too_many_connections"
        assert refused.headers["connection"] == "close"
        held.pop().close()
        end = time.monotonic() + 10  # until the server has seen that connection close
        while (r := httpx.post(base + "/v1/predict", json={"texts": ["hi"]})).status_code == 429:
            assert time.monotonic() < end, "the closed connection is still counted"
            time.sleep(0.02)
        assert r.status_code == 200
        held[0].close()


# -- batching ------------------------------------------------------------------------------
@pytest.mark.parametrize(("max_batch", "batched"), [(32, True), (1, False)])
def test_concurrent_requests_share_batches_unless_batching_is_off(
    bundle: Path, max_batch: int, batched: bool
) -> None:
    # While the first request runs (50 ms), the others arrive and queue for the next batch.
    with serving(bundle, loader=slow_loader(0.05), max_batch=max_batch, max_wait_ms=100) as base:
        wait_ready(base)
        responses = post_all(base, [{"texts": [t]} for t in TEXTS * 3])
        assert all(r.status_code == 200 for r in responses)
        sizes = metrics(base)["frugalml_batch_size"]
    count = next(s.value for s in sizes.samples if s.name.endswith("_count"))
    total = next(s.value for s in sizes.samples if s.name.endswith("_sum"))
    assert total == 12
    assert (count <= 4) if batched else (count == 12)


def test_an_input_that_breaks_the_model_fails_only_its_own_request(
    bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Fragile(SlowPredictor):
        def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
            if any("boom" in t for t in texts):
                raise RuntimeError("the model cannot take this")
            return super().predict_proba(texts)

    fragile: list[Fragile] = []

    def loader(path: Path) -> Bundle:
        real = frugalml.load(path)
        fragile.append(Fragile(real.predictor, 0.3))
        return Bundle(real.path, real.manifest, fragile[-1])  # type: ignore[arg-type]

    with serving(bundle, loader=loader) as base:
        wait_ready(base)
        with ThreadPoolExecutor(1) as pool:
            blocker = pool.submit(httpx.post, base + "/v1/predict", json={"texts": ["hi"]})
            # Once it is in inference, the next five queue behind it and make one batch.
            wait_until(lambda: fragile[0].calls > SlowPredictor.WARMUP_CALLS)
            responses = post_all(base, [{"texts": [t]} for t in ["boom", *TEXTS]])
            assert blocker.result().status_code == 200
    assert [r.status_code for r in responses] == [500, 200, 200, 200, 200]
    assert error(responses[0])["code"] == "internal"
    assert "inference failed on a batch of 5; retrying one by one" in caplog.text
    expected = [p["label"] for p in frugalml.load(bundle).predict(TEXTS)]
    assert [r.json()["predictions"][0]["label"] for r in responses[1:]] == expected


def test_inference_threads_default_to_the_cores_shared_among_workers() -> None:
    cores = available_cpus()
    assert ServeSettings().inference_threads() == cores
    assert ServeSettings(workers=2 * cores).inference_threads() == 1  # never zero
    assert ServeSettings(workers=2, threads=3).inference_threads() == 3


def test_available_cpus_respect_a_container_cpu_quota(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cores = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")  # no quota
    assert available_cpus(cpu_max) == cores
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one thread
    assert available_cpus(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (cores + 8)} 100000\n")  # a quota above the cores
    assert available_cpus(cpu_max) == cores
    assert available_cpus(tmp_path / "missing") == cores  # cgroup v1 or not Linux


def test_length_buckets_keep_short_texts_from_long_ones() -> None:
    lengths = [5] * 10 + [400] * 10 + [6]
    buckets = length_buckets(lengths)
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[5] * 10 + [6], [400] * 10]
    assert length_buckets([5, 400]) == [[0, 1]]  # too few to be worth two calls
    assert sorted(i for b in length_buckets(list(range(1, 100))) for i in b) == list(range(99))


# -- metrics -------------------------------------------------------------------------------
def test_metrics_parse_and_count_what_was_sent(bundle: Path) -> None:
    with serving(bundle) as base:
        wait_ready(base)
        sent = [TEXTS[: 1 + i % 4] for i in range(10)]
        for texts in sent:
            client.predict(base, texts)
        httpx.post(base + "/v1/predict", json={"texts": []})
        version = client.model_info(base)["version"]
        families = metrics(base)
    assert families["frugalml_http_request_duration_seconds"].type == "histogram"
    codes = {
        (s.labels["route"], s.labels["code"]): s.value
        for s in families["frugalml_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert codes[("/v1/predict", "200")] == 10
    assert codes[("/v1/predict", "422")] == 1
    predicted = [s for s in families["frugalml_predictions"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in predicted) == sum(len(t) for t in sent)
    assert {s.labels["label"] for s in predicted} == set(frugalml.load(bundle).labels)
    (info,) = families["frugalml_model_info"].samples
    assert info.labels == {"version": version, "strategy": "tfidf"}
    assert families["frugalml_batch_size"].type == "histogram"
    assert families["frugalml_queue_depth"].samples[0].value == 0
    assert families["frugalml_inference_cpu_seconds"].samples[0].value >= 0
    assert families["frugalml_inference_usd_per_1k_predictions"].samples[0].value >= 0
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    price = families["frugalml_price_usd_per_cpu_second"].samples[0].value
    assert price == pytest.approx(Prices().usd_per_cpu_s)  # the bundle was fit at the defaults


def test_serving_cost_uses_the_prices_the_bundle_was_trained_at(
    demo_splits: Splits, tmp_path: Path
) -> None:
    prices = Prices(usd_per_hour=0.768, basis="8 vCPU VM at $0.768/h", vcpus=8)
    run = frugalml.fit(
        demo_splits.train, out=tmp_path / "run", strategies=["tfidf"], prices=prices, ship="none"
    )
    with serving(run.run_dir / "bundle") as base:
        wait_ready(base)
        client.predict(base, TEXTS[:4])
        families = metrics(base)
        serving_info = client.model_info(base)["serving"]
    price = families["frugalml_price_usd_per_cpu_second"].samples[0].value
    assert price == pytest.approx(0.768 / 3600 / 8)  # not the 2-vCPU default's 0.096 / 3600 / 2
    cpu_s = families["frugalml_inference_cpu_seconds"].samples[0].value
    expected = 1000 * cpu_s / 4 * price
    assert serving_info["usd_per_1k_predictions"] == pytest.approx(expected, rel=1e-6)


# -- reload --------------------------------------------------------------------------------
def test_reload_swaps_models_under_traffic_without_a_failed_request(
    bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin")
    old, new = bundles
    with serving(old, admin_key_env="TEST_ADMIN_KEY") as base:
        wait_ready(base)
        before = client.model_info(base)["version"]
        seen: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    r = http.post(base + "/v1/predict", json={"texts": TEXTS})
                    version = r.json()["predictions"][0]["model_version"] if r.is_success else None
                    seen.append((r.status_code, version))

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(seen) > 10)
        swapped = client.reload(base, str(new), admin_key="admin")
        after_swap = len(seen)
        wait_until(lambda: len(seen) > after_swap + 10)  # requests after the swap, too
        stop.set()
        for t in threads:
            t.join()
        bad = httpx.post(
            base + "/v1/model/reload",
            json={"bundle": str(new.parent / "missing")},
            headers={"Authorization": "Bearer admin"},
        )
        after = client.model_info(base)["version"]
    assert swapped["previous_version"] == before
    assert swapped["version"] == after != before
    assert len(seen) > 20
    assert {code for code, _ in seen} == {200}
    versions = [v for _, v in seen]
    assert set(versions) == {before, after}
    assert bad.status_code == 422
    assert error(bad)["code"] == "bad_bundle"


@pytest.fixture(scope="module")
def broken(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles that cannot answer: one saved through the public path with labels one short
    (it loads), and two whose manifest lost its labels (the schema refuses them at load;
    `save_bundle` refuses to write an unlabeled bundle at all)."""
    root = tmp_path_factory.mktemp("broken")
    manifest = frugalml.load(bundle).manifest
    predictor = frugalml.load(bundle).predictor
    predictor.labels = predictor.labels[:-1]
    made = {
        "short": save_bundle(
            root / "short",
            predictor,
            strategy=manifest.strategy,
            config=manifest.config,
            task=manifest.task,
            data_fingerprint=manifest.data_fingerprint,
        )
    }
    for name in ("unlabeled", "no_labels_field"):
        made[name] = root / name
        shutil.copytree(bundle, made[name])
        edited = json.loads((made[name] / "manifest.json").read_text())
        if name == "unlabeled":
            edited["labels"] = []
        else:
            del edited["labels"]
        (made[name] / "manifest.json").write_text(json.dumps(edited))
    return made


def test_reload_refuses_a_bundle_that_cannot_answer_and_the_old_model_serves_on(
    bundle: Path, broken: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin")
    admin = {"Authorization": "Bearer admin"}
    with serving(bundle, admin_key_env="TEST_ADMIN_KEY") as base:
        wait_ready(base)
        before = client.model_info(base)["version"]
        for name, says in [
            ("short", "labels and model do not match"),
            ("unlabeled", "labels"),
            ("no_labels_field", ""),  # 'labels' missing, or the edit detected: either way 422
        ]:
            refused = httpx.post(
                base + "/v1/model/reload", json={"bundle": str(broken[name])}, headers=admin
            )
            assert refused.status_code == 422, (name, refused.text)
            assert error(refused)["code"] == "bad_bundle"
            assert says in error(refused)["message"]
            assert httpx.get(base + "/readyz").json()["model_version"] == before
            assert len(client.predict(base, TEXTS)) == len(TEXTS)
        assert metric(base, "frugalml_model_reloads", outcome="failed") == 3
        assert metric(base, "frugalml_http_requests", route="/v1/predict", code="500") == 0


def test_a_bundle_whose_labels_do_not_match_its_model_never_turns_ready(
    broken: dict[str, Path],
) -> None:
    with serving(broken["short"]) as base:
        failed = wait_load_failed(base)
    assert "labels and model do not match" in failed["message"]


@pytest.fixture
def tampered(bundle: Path, tmp_path: Path) -> Path:
    """A copy of the served bundle with two labels swapped in its manifest by hand."""
    folder = shutil.copytree(bundle, tmp_path / "tampered")
    edited = json.loads((folder / "manifest.json").read_text())
    edited["labels"][:2] = edited["labels"][1::-1]
    (folder / "manifest.json").write_text(json.dumps(edited, indent=2))
    return folder


TAMPERED = "manifest.json was changed after it was written"


def test_a_tampered_manifest_never_turns_ready_and_is_refused_on_reload(
    bundle: Path, tampered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(tampered) as base:
        assert TAMPERED in wait_load_failed(base)["message"]
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin")
    with serving(bundle, admin_key_env="TEST_ADMIN_KEY") as base:
        wait_ready(base)
        before = client.model_info(base)["version"]
        refused = httpx.post(
            base + "/v1/model/reload",
            json={"bundle": str(tampered)},
            headers={"Authorization": "Bearer admin"},
        )
        assert refused.status_code == 422
        assert TAMPERED in error(refused)["message"]
        assert httpx.get(base + "/readyz").json()["model_version"] == before


def test_frugalml_serve_refuses_a_tampered_bundle_before_it_listens(tampered: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "frugalml", "serve", str(tampered), "--port", str(free_port())],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert TAMPERED in done.stderr and "Traceback" not in done.stderr


def test_the_served_version_changes_when_the_manifest_does(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = shutil.copytree(bundle, tmp_path / "bundle")
    monkeypatch.setenv("TEST_ADMIN_KEY", "admin")
    with serving(copy, admin_key_env="TEST_ADMIN_KEY") as base:
        wait_ready(base)
        before = client.model_info(base)["version"]
        update_manifest(copy, stopped="deadline")  # the same files, another manifest
        after = client.reload(base, admin_key="admin")["version"]
    assert before != after == frugalml.load(copy).version


# -- the int8 ONNX bundle ------------------------------------------------------------------
def test_an_int8_onnx_bundle_serves_the_same_labels(
    small_csv: Path, tmp_path: Path, tiny_backbone: Path
) -> None:
    pytest.importorskip("onnxruntime")
    options = {"backbone": str(tiny_backbone), "train": {"epochs": 2, "batch_size": 16}}
    run = frugalml.fit(
        small_csv, out=tmp_path / "run", strategies=["full"], options={"full": options}
    )
    assert run.bundle.manifest.predictor["precision"] == "int8"
    texts = TEXTS * 3
    with serving(run.run_dir / "bundle", max_wait_ms=20) as base:
        wait_ready(base)
        info = client.model_info(base)
        responses = post_all(base, [{"texts": [t]} for t in texts])
    assert info["predictor"] == {"format": "onnx", "precision": "int8"}
    expected = [p["label"] for p in run.bundle.predict(texts)]
    assert [r.json()["predictions"][0]["label"] for r in responses] == expected


# -- the real process: CLI, SIGTERM, workers -----------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server_process(bundle: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    command = [sys.executable, "-m", "frugalml", "serve", str(bundle), "--port", str(port)]
    process = subprocess.Popen(  # its own process group: workers are cleaned up with it
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/readyz").status_code == 200:
                    break
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < end, "the server was not ready in 30 s"
            time.sleep(0.05)
        yield process, base
    finally:
        # Kill the whole group: a `--workers` child left alive keeps stdout open, and
        # `communicate` would then wait for it forever.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def test_sigterm_answers_every_accepted_request_then_exits(bundle: Path) -> None:
    # A client still sending its body holds the batch open (it may be on its way to it), so
    # the 8 requests are certainly waiting when SIGTERM comes: the server's own counts say
    # when all 8 are in, and the batch runs once that client gives up, during the drain.
    args = ["--max-wait-ms", "20000", "--max-batch", "64", "--request-timeout-s", "30"]
    with (
        server_process(bundle, *args) as (process, base),
        contextlib.closing(send_part_of_a_body(base)) as sender,  # closed on failure too
    ):
        wait_for_metric(base, "frugalml_predict_receiving", 1)
        with ThreadPoolExecutor(8) as pool:
            pending = [
                pool.submit(httpx.post, base + "/v1/predict", json={"texts": [t]}, timeout=60)
                for t in TEXTS * 2
            ]
            wait_for_metric(base, "frugalml_predict_accepted", 8)
            assert metric(base, "frugalml_predict_in_flight") == 8  # none answered yet
            process.send_signal(signal.SIGTERM)
            end = time.monotonic() + 10
            # until it stops accepting: refused, or reset by the listener closing under a probe
            with contextlib.suppress(
                httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError
            ):
                while True:
                    httpx.get(base + "/livez")
                    assert time.monotonic() < end, "still accepting connections after SIGTERM"
                    time.sleep(0.02)
            assert not any(f.done() for f in pending)
            sender.close()
            answers = [f.result() for f in pending]
        output, _ = process.communicate(timeout=20)
    assert [a.status_code for a in answers] == [200] * 8
    assert process.returncode == 0, output
    assert "predict requests: 8 accepted, 8 answered" in output


def test_workers_each_serve_a_model(bundle: Path) -> None:
    with server_process(bundle, "--workers", "2", "--header-timeout-s", "0.5") as (
        process,
        base,
    ):
        with socket.create_connection(address(base), timeout=10) as silent:
            assert dribble_until_closed(silent, b"") == b""  # the workers' header deadline
        # /readyz answered by one worker says nothing of the other: until both are up, a
        # request may reach one still loading (503 not_ready, as a load balancer would see).
        end = time.monotonic() + 30
        while True:
            try:
                answers = client.predict(base, TEXTS)
                break
            except client.ServeError as err:
                assert "not_ready" in str(err) and time.monotonic() < end, err
                time.sleep(0.1)
        assert len(answers) == len(TEXTS)
        lines: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # Both workers loaded before SIGTERM, or the second may be stopped while loading.
        wait_until(lambda: "".join(lines).count("ready in") == 2, timeout=60)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        reader.join(timeout=20)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert output.count("ready in") == 2  # one model per worker


def test_cli_refuses_a_non_bundle_and_bad_options_and_warns_about_public_binding(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "frugalml", "serve", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "without --api-key-env" in done.stderr
    assert "manifest.json is missing" in done.stderr
    with pytest.raises(ConfigError) as bad:
        settings_from_options(max_batch=0, max_queue=0, port=70_000)
    assert bad.value.problems == [
        "--port: Input should be less than or equal to 65535",
        "--max-batch: Input should be greater than or equal to 1",
        "--max-queue: Input should be greater than or equal to 1",
    ]
    with pytest.raises(ConfigError, match="max_queue \\(100\\) must be at least"):
        settings_from_options(max_queue=100, max_texts=200)


def test_a_public_host_refuses_a_key_shorter_than_16_characters(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHORT_KEY", "fifteen-chars!!")
    monkeypatch.setenv("COLUMNS", "160")
    serve = [sys.executable, "-m", "frugalml", "serve", str(bundle), "--host", "0.0.0.0"]
    for option in ("--api-key-env", "--admin-key-env"):
        done = subprocess.run(
            [*serve, option, "SHORT_KEY", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"{option} SHORT_KEY: the key has 15 characters" in done.stderr
        assert "needs at least 16" in done.stderr
        assert "Traceback" not in done.stderr
    for host in ("0.0.0.0", "10.1.2.3", "::", "serving.example"):
        with pytest.raises(ConfigError, match="needs at least 16"):
            ServeSettings(host=host, api_key_env="SHORT_KEY").api_key()
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):  # loopback: any key will do
        assert ServeSettings(host=host, api_key_env="SHORT_KEY").api_key() == "fifteen-chars!!"


# -- the deploy recipe ---------------------------------------------------------------------
DEPLOY = Path(__file__).parents[2] / "deploy"


def test_the_kubernetes_manifest_probes_readyz_and_livez() -> None:
    import yaml

    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 8000
    grace = docs["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > 30 + 5  # the drain (--shutdown-timeout-s 30) plus preStop
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert target["name"] == docs["Deployment"]["metadata"]["name"]


def test_the_dockerfile_runs_serve_with_options_that_exist() -> None:
    import json

    import typer

    from frugalml.cli import app

    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", "")
    cmd = json.loads(next(line for line in text.splitlines() if line.startswith("CMD"))[3:])
    assert cmd[:3] == ["frugalml", "serve", "/bundle"]
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    known = {opt for param in command.params for opt in param.opts}
    assert {arg for arg in cmd if arg.startswith("--")} <= known
    assert "EXPOSE 8000" in text
