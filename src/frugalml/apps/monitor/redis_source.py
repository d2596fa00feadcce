"""Events from a Redis Stream, read as a consumer group (`pip install 'frugalml[redis]'`).

Each message's fields are an event (`id`, `time`, `text`, ...; or one `event` field holding
its JSON). A message is acknowledged only after the batch holding it is committed to the
store, so a consumer killed mid-batch finds it again among its pending messages on restart;
the store's dedup by event id makes that redelivery count once. Pending messages of a dead
consumer of the same group are claimed after `claim_idle_ms`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from frugalml.apps.monitor.events import Raw, RawBatch
from frugalml.errors import ConfigError


def _redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ConfigError(
            "reading a Redis Stream needs the 'redis' extra: pip install 'frugalml[redis]'"
        ) from None
    return redis


class RedisSource:
    def __init__(
        self,
        url: str,
        stream: str,
        *,
        group: str = "frugalml-monitor",
        consumer: str = "monitor-1",
        block_ms: int = 1000,
        idle_exit_s: float | None = None,
        claim_idle_ms: int = 60_000,
    ) -> None:
        redis = _redis()
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.stream, self.group, self.consumer = stream, group, consumer
        self.block_ms, self.idle_exit_s, self.claim_idle_ms = block_ms, idle_exit_s, claim_idle_ms
        self.name = f"redis:{stream}:{group}"
        self._stopped = False
        try:
            self.client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        except redis.ConnectionError as err:
            raise ConfigError(f"cannot reach Redis at {url}: {err}") from None

    def stop(self) -> None:
        self._stopped = True

    def committed(self, batch: RawBatch) -> None:
        if batch.ack:
            self.client.xack(self.stream, self.group, *batch.ack)

    def batches(self, position: str | None, size: int) -> Iterator[RawBatch]:
        """Own pending messages first (a restart), then other dead consumers', then new ones."""
        import time

        yield from self._read("0", size)
        yield from self._claim(size)
        idle_since = time.monotonic()
        while not self._stopped:
            got = False
            for batch in self._read(">", size, block=True):
                got = True
                yield batch
            if got:
                idle_since = time.monotonic()
            elif self.idle_exit_s is not None and time.monotonic() - idle_since > self.idle_exit_s:
                return

    def _read(self, start: str, size: int, block: bool = False) -> Iterator[RawBatch]:
        while True:
            answer = self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: start},
                count=size,
                block=self.block_ms if block else None,
            )
            messages = answer[0][1] if answer else []
            if not messages:
                return
            yield self._batch(messages)
            if start == ">":
                return
            start = messages[-1][0]  # pending ones after the last seen

    def _claim(self, size: int) -> Iterator[RawBatch]:
        cursor = "0-0"
        while True:
            cursor, messages, *_ = self.client.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, cursor, count=size
            )
            if messages:
                yield self._batch(messages)
            if cursor == "0-0" or not messages:
                return

    def _batch(self, messages: list[tuple[str, dict[str, str] | None]]) -> RawBatch:
        records = []
        for message_id, fields in messages:
            where = f"{self.stream}:{message_id}"
            if fields is None:  # deleted from the stream while pending
                continue
            if "event" in fields:
                try:
                    data = json.loads(fields["event"])
                except ValueError as err:
                    records.append(Raw(None, where, f"'event' is not JSON ({err})"))
                    continue
                records.append(
                    Raw(
                        data if isinstance(data, dict) else None,
                        where,
                        "" if isinstance(data, dict) else "not a JSON object",
                    )
                )
            else:
                data = dict(fields)
                if "entities" in data:
                    data["entities"] = data["entities"].split("|")
                records.append(Raw(data, where))
        return RawBatch(records, position=None, ack=[m for m, _ in messages])
