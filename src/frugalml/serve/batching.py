"""Dynamic micro-batching: many small requests become a few well-filled inference batches.

Requests wait in an asyncio queue on the event loop. A batch closes when it holds `max_batch`
texts, when its oldest request has waited `max_wait_s`, or as soon as no other accepted
request is on its way to the queue (still reading its body, say): waiting for requests that
may never come only adds latency. It runs on the one inference thread while the loop keeps
accepting, so under load the next batch fills during the current one.
Inside a batch, texts are grouped into length buckets, so a short text is not padded to the
length of a long one. A request is never split across batches, and is answered with the rows
of the model that actually computed them (a reload may swap models between batches). If a
batch fails, its requests are retried one by one, so one input that breaks the model fails
only its own request.

Back-pressure: `submit` refuses at once when the queue holds `max_queue` texts, or when the
work ahead of a request, at the measured seconds per text, would carry it past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

log = logging.getLogger("frugalml.serve")


class Predicts(Protocol):
    def predict_proba(self, inputs: Sequence[Any]) -> np.ndarray: ...


M = TypeVar("M", bound=Predicts)

# What a batch computes: one row per input. Requests are batched only with requests of the
# same operation, so an extension's own computation (say, probabilities and embeddings
# together) is batched like `predict_proba` without slowing it down.
Operation = Callable[[Any, list[Any]], np.ndarray]


def predict_proba(model: Predicts, inputs: list[Any]) -> np.ndarray:
    return model.predict_proba(inputs)


class RejectedError(Exception):
    """The batcher will not (or can no longer) answer a request in time: the server's 503."""

    def __init__(self, code: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


@dataclass(frozen=True)
class BatchStats:
    size: int
    wall_s: float
    # The process's CPU time during the batch less the event loop's own: the inference thread
    # and the runtime's worker threads (and a reload's loader thread, if one runs meanwhile).
    cpu_s: float


@dataclass(eq=False)
class _Request(Generic[M]):
    inputs: list[Any]
    future: asyncio.Future[tuple[np.ndarray, M]]
    enqueued: float
    deadline: float
    op: Operation = predict_proba


class MicroBatcher(Generic[M]):
    """Groups requests for `current()` (the model now being served) on one inference thread."""

    def __init__(
        self,
        current: Callable[[], M],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.current = current
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.on_batch = on_batch
        self.arriving = 0  # requests accepted and on their way to `predict` (reading, parsing)
        self.queued = 0  # texts waiting for a batch
        self.busy = 0  # texts in the batch now running
        self.seconds_per_item = 0.0  # moving average over batches, for deadlines and Retry-After
        self._pending: deque[_Request[M]] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="frugalml-inference")
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def predict(
        self, inputs: list[Any], deadline: float, op: Operation = predict_proba
    ) -> tuple[np.ndarray, M]:
        """Probabilities for `inputs` (one row each) and the model that computed them; with
        `op`, that operation's rows instead (`op(model, inputs)`, batched with its own kind).

        `deadline` is on the event loop's clock; raises `RejectedError` if it cannot be met.
        """
        loop = asyncio.get_running_loop()
        future = self._submit(inputs, loop.time(), deadline, op)
        try:
            return await asyncio.wait_for(future, deadline - loop.time())
        except TimeoutError:
            raise RejectedError(
                "deadline_exceeded",
                "the request was not answered before its deadline; the server is overloaded",
                self.backlog_s(),
            ) from None

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Wrap what a request does before `predict` (reading, parsing): a filling batch
        waits for such requests, and only for them."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1
            self._wake.set()

    def backlog_s(self) -> float:
        return (self.queued + self.busy) * self.seconds_per_item

    def _submit(
        self, inputs: list[Any], now: float, deadline: float, op: Operation
    ) -> asyncio.Future[tuple[np.ndarray, M]]:
        if self._closed:
            raise RejectedError("shutting_down", "the server is shutting down", 1.0)
        if self.queued + len(inputs) > self.max_queue:
            raise RejectedError(
                "queue_full",
                f"{self.queued} texts are waiting, the most this server queues is "
                f"{self.max_queue}; retry after Retry-After seconds",
                self.backlog_s(),
            )
        if now + self.backlog_s() + len(inputs) * self.seconds_per_item > deadline:
            raise RejectedError(
                "deadline_unreachable",
                f"the work queued ahead (about {self.backlog_s():.1f} s) would make this request "
                "miss its deadline; retry after Retry-After seconds",
                self.backlog_s(),
            )
        future: asyncio.Future[tuple[np.ndarray, M]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(inputs, future, now, deadline, op))
        self.queued += len(inputs)
        self._wake.set()
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await self._fill(loop)
            batch = self._take(loop.time())
            if batch:
                await self._infer(batch)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a full batch is queued or the oldest request has waited long enough,
        but not once every accepted request is queued: then nothing more is on its way, and
        waiting would only add latency (a lone request at low traffic runs at once)."""
        due = self._pending[0].enqueued + self.max_wait_s
        while self.queued < self.max_batch and (left := due - loop.time()) > 0:
            if not self.arriving:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    def _take(self, now: float) -> list[_Request[M]]:
        """Oldest first, whole requests of the oldest one's operation, up to `max_batch` texts
        (a larger request runs alone); requests of another operation wait for the next batch."""
        batch: list[_Request[M]] = []
        size = 0
        while self._pending:
            request = self._pending[0]
            if batch and size + len(request.inputs) > self.max_batch:
                break
            if batch and request.op is not batch[0].op:
                break
            self._pending.popleft()
            self.queued -= len(request.inputs)
            if request.future.done():  # its caller stopped waiting (deadline passed)
                continue
            if request.deadline <= now:
                request.future.set_exception(
                    RejectedError("deadline_exceeded", "the request waited past its deadline", 1.0)
                )
                continue
            batch.append(request)
            size += len(request.inputs)
        return batch

    async def _infer(self, batch: list[_Request[M]]) -> None:
        model = self.current()
        inputs = [x for request in batch for x in request.inputs]
        self.busy = len(inputs)
        loop = asyncio.get_running_loop()
        wall0, cpu0, loop_cpu0 = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            proba = await loop.run_in_executor(
                self._executor, predict_bucketed, model, inputs, batch[0].op
            )
        except Exception:  # one request's input broke the model: find it, answer the others
            log.exception("inference failed on a batch of %d; retrying one by one", len(inputs))
            await self._one_by_one(batch, model)
            return
        finally:
            self.busy = 0
        wall = time.perf_counter() - wall0
        cpu = (time.process_time() - cpu0) - (time.thread_time() - loop_cpu0)
        per_item = wall / len(inputs)
        average = self.seconds_per_item
        self.seconds_per_item = 0.8 * average + 0.2 * per_item if average else per_item
        start = 0
        for request in batch:
            rows = proba[start : start + len(request.inputs)]
            start += len(request.inputs)
            if not request.future.done():
                request.future.set_result((rows, model))
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(inputs), wall, max(cpu, 0.0)))

    async def _one_by_one(self, batch: list[_Request[M]], model: M) -> None:
        loop = asyncio.get_running_loop()
        for request in batch:
            try:
                rows = await loop.run_in_executor(
                    self._executor, predict_bucketed, model, request.inputs, request.op
                )
            except Exception as err:
                if not request.future.done():
                    request.future.set_exception(err)
                continue
            if not request.future.done():
                request.future.set_result((rows, model))

    async def close(self, timeout_s: float) -> None:
        """Refuse new work, let what was accepted finish (up to `timeout_s`), then stop."""
        self._closed = True
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while (self._pending or self.busy) and loop.time() < end:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def run_in_thread(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the inference thread, between batches (warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)


def predict_bucketed(
    model: Predicts, inputs: list[Any], op: Operation = predict_proba
) -> np.ndarray:
    """One predictor call per length bucket, rows put back in input order."""
    buckets = length_buckets([len(x) if isinstance(x, str) else 1 for x in inputs])
    if len(buckets) == 1:
        return op(model, inputs)
    out: np.ndarray | None = None
    for idx in buckets:
        proba = op(model, [inputs[i] for i in idx])
        if out is None:
            out = np.empty((len(inputs), proba.shape[1]), dtype=proba.dtype)
        out[idx] = proba
    assert out is not None
    return out


def length_buckets(
    lengths: Sequence[int], *, ratio: float = 2.0, min_size: int = 8
) -> list[list[int]]:
    """Indices grouped by length, shortest first: a bucket closes when the next text is more
    than `ratio` times its shortest and it already holds `min_size` texts (a smaller bucket
    would cost more in per-call overhead than it saves in padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets and (
            len(buckets[-1]) < min_size or lengths[i] <= ratio * max(1, lengths[buckets[-1][0]])
        ):
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets
