"""`frugalml serve` through real HTTP on 127.0.0.1: every status code, batching, metrics
parsed with Prometheus' own parser, hot reload under traffic, and a SIGTERM drain of a real
server process. Most tests serve a TF-IDF bundle (fits in a second); one serves int8 ONNX."""

from __future__ import annotations

import contextlib
import os
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
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

import frugalml
from frugalml import client
from frugalml.bundle import Bundle
from frugalml.config import SplitConfig
from frugalml.data.split import Splits
from frugalml.errors import ConfigError
from frugalml.serve import ServeSettings, create_app
from frugalml.serve.batching import length_buckets
from frugalml.serve.settings import available_cpus, settings_from_options

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


@contextlib.contextmanager
def serving(
    bundle: Path, *, loader: Callable[[Path], Bundle] = frugalml.load, **settings: Any
) -> Iterator[str]:
    """A real uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    app = create_app(bundle, ServeSettings(**settings), loader=loader)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_ready(url: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while httpx.get(url + "/readyz").status_code != 200:
        assert time.monotonic() < end, "not ready in time"
        time.sleep(0.02)


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


def test_model_info_has_the_manifest_summary_and_cost_card(url: str) -> None:
    info = client.model_info(url)
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
    with serving(
        bundle, loader=slow_loader(0.4), max_queue=2, max_batch=1, max_texts=1, max_wait_ms=0
    ) as base:
        wait_ready(base)
        with httpx.Client(timeout=30) as http, ThreadPoolExecutor(4) as pool:

            def send() -> httpx.Response:
                return http.post(base + "/v1/predict", json={"texts": ["hi"]})

            running = pool.submit(send)  # taken into inference at once
            time.sleep(0.1)
            queued = [pool.submit(send) for _ in range(2)]  # the queue is now full
            time.sleep(0.1)
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
        time.sleep(0.5)  # that batch finishes: the server now knows it takes 0.5 s a text
        started = time.perf_counter()
        refused = httpx.post(base + "/v1/predict", json={"texts": ["hi"]})
        assert time.perf_counter() - started < 0.15  # refused up front, not after waiting
    assert refused.status_code == 503
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


def test_a_bundle_that_fails_to_load_fails_the_probes_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with serving(tmp_path) as base:
        end = time.monotonic() + 5
        while (r := httpx.get(base + "/readyz")).status_code == 503 and error(r)[
            "code"
        ] == "not_ready":
            assert time.monotonic() < end
            time.sleep(0.02)
        assert error(r)["code"] == "load_failed"
        assert "schema version" in error(r)["message"]
        assert httpx.get(base + "/livez").status_code == 503


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

    def loader(path: Path) -> Bundle:
        real = frugalml.load(path)
        return Bundle(real.path, real.manifest, Fragile(real.predictor, 0.3))  # type: ignore[arg-type]

    with serving(bundle, loader=loader) as base:
        wait_ready(base)
        with ThreadPoolExecutor(1) as pool:
            blocker = pool.submit(httpx.post, base + "/v1/predict", json={"texts": ["hi"]})
            time.sleep(0.1)  # the next five queue behind it and make one batch
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
        time.sleep(0.3)
        swapped = client.reload(base, str(new), admin_key="admin")
        time.sleep(0.3)
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
    with server_process(bundle, "--max-wait-ms", "600", "--max-batch", "64") as (process, base):
        with ThreadPoolExecutor(8) as pool:
            pending = [
                pool.submit(httpx.post, base + "/v1/predict", json={"texts": [t]}, timeout=30)
                for t in TEXTS * 2
            ]
            time.sleep(0.25)  # all 8 are accepted and waiting for their batch
            process.send_signal(signal.SIGTERM)
            time.sleep(0.15)
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                httpx.get(base + "/livez")
            answers = [f.result() for f in pending]
        output, _ = process.communicate(timeout=20)
    assert [a.status_code for a in answers] == [200] * 8
    assert process.returncode == 0, output
    assert "predict requests: 8 accepted, 8 answered" in output


def test_workers_each_serve_a_model(bundle: Path) -> None:
    with server_process(bundle, "--workers", "2") as (process, base):
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
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
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
