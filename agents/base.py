"""The shared factory for imflow's Faust apps, their client services and batch loops.

Each agent is its own small Faust app (own consumer group, own process, scales by adding
processes). Clients are `mode.Service`s added as dependencies of the app, so they are
connected before the agents run and closed when the worker stops.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import faust
import mode
import orjson
from faust.types import EventT

from agents import metrics
from agents.transport import ShortFetchTransport
from app.errors import StoreUnavailable
from app.heap import settle_heap
from app.models import SequencedRecord, parse_sequenced_items
from app.settings import Settings, get_settings
from app.stores.history import HistoryStore
from app.stores.redis_client import RedisClient, create_redis
from app.usecases.sinks import Sink

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
# Errors that mean "the store is down for now": retry the same batch, never skip it.
RETRYABLE = (StoreUnavailable,)
RETRY_MAX_S = 5.0
# Event-loop turns a batch waits for more of the events that are on their way to it.
SETTLE_TURNS = 4


def create_faust_app(name: str, settings: Settings | None = None, *,
                     round_ms: int | None = None) -> faust.App:
    """A Faust app `<prefix>-<name>` (= its consumer group) configured from settings,
    whose consumer fetches in rounds of `round_ms` when busy (default: a sink's)."""
    s = settings or get_settings()
    datadir = Path(s.faust_data_dir) / f"{s.app_prefix}-{name}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{s.app_prefix}-{name}",
        broker=[f"kafka://{host}" for host in s.kafka_bootstrap.split(",")],
        datadir=str(datadir),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        producer_acks=-1,
        producer_linger=0.001,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_session_timeout=s.agent_session_timeout_s,
        broker_heartbeat_interval=s.agent_heartbeat_interval_s,
        broker_rebalance_timeout=2 * s.agent_session_timeout_s,
        broker_commit_interval=0.5,
        stream_wait_empty=False,
        web_enabled=False,
        table_cleanup_interval=60.0,
        key_serializer="raw",
        value_serializer="raw",
    )
    # Before anything (a topic, an agent) makes Faust create its default transport.
    app.transport = ShortFetchTransport(app.conf.broker_consumer, app,
                                        fetch_max_wait_ms=s.agent_fetch_max_wait_ms,
                                        fetch_busy_wait_ms=s.agent_round_ms
                                        if round_ms is None else round_ms)
    app.add_dependency(metrics.MetricsService(s, name))  # /metrics on the agent's own port

    @app.task
    async def settle() -> None:  # runs once the app's services have started
        settle_heap()

    return app


def topic(app: faust.App, name: str) -> faust.TopicT:
    """A raw-bytes topic: agents parse values themselves so bad records can be dead-lettered."""
    return app.topic(name, key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw")


class RedisService(mode.Service):
    """An asyncio Redis client that lives as long as the Faust app."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._client: RedisClient | None = None

    @property
    def client(self) -> RedisClient:
        assert self._client is not None, "RedisService not started"
        return self._client

    async def on_start(self) -> None:
        self._client = create_redis(self.settings)
        await self._client.ping()

    async def on_stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class HistoryService(mode.Service):
    """The HBase history store (thread pool + Thrift connections) as a Faust dependency."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._store: HistoryStore | None = None

    @property
    def store(self) -> HistoryStore:
        assert self._store is not None, "HistoryService not started"
        return self._store

    async def on_start(self) -> None:
        self._store = HistoryStore(self.settings)

    async def on_stop(self) -> None:
        if self._store is not None:
            await self._store.close()


def dead_letter_value(msg: Any, reason: str, *, index: int | None = None,
                      item: bytes | None = None) -> bytes:
    """The dead-letter record of a rejected input: the reason, where it was (topic,
    partition, offset, and its index inside a batch record), and its value (the item's
    own, for one message of a batch)."""
    value: bytes = item if item is not None else (
        msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b""))
    record = {
        "reason": reason,
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
        "index": index,
        "key": msg.key.decode("utf-8", "replace") if isinstance(msg.key, bytes) else None,
        "value": value.decode("utf-8", "replace"),
        "value_b64": base64.b64encode(value).decode(),
    }
    log.warning("dead-letter %s[%s]@%s#%s: %s", msg.topic, msg.partition, msg.offset,
                index, reason)
    return orjson.dumps(record)


class DeadLetters:
    """Writes one record per rejected input to the dead-letter topic, with the reason."""

    def __init__(self, app: faust.App, settings: Settings, agent: str) -> None:
        self._topic = topic(app, settings.topic_dead_letter)
        self._counter = metrics.DEAD_LETTERS.labels(agent)

    async def send(self, event: EventT, reason: str, *, index: int | None = None,
                   item: bytes | None = None) -> None:
        msg = event.message
        fut = await self._topic.send(key=msg.key, value=dead_letter_value(
            msg, reason, index=index, item=item))
        await fut  # acked before the bad record's offset can be committed
        self._counter.inc()


async def retry_forever(what: str, call: Callable[[], Awaitable[Any]], *,
                        agent: str = "") -> Any:
    """Run `call` until it succeeds: a sink never skips a record because a store is down.

    The stream does not advance meanwhile, so no offset past the failed batch is committed.
    """
    delay = RETRY_INITIAL_S
    while True:
        try:
            return await call()
        except RETRYABLE as exc:
            metrics.RETRIES.labels(agent, what).inc()
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)


class EventBatches:
    """Batches of the events that have arrived, each handed over as soon as the caller
    asks for the next one; acks are the caller's (`ack`), so no offset is committed
    before the caller says the batch's effects are stored.

    Unlike Faust's `take_events`, a batch never waits to fill up: it is what has arrived
    (latency = one round of work). A busy agent's consumer fetches in rounds
    (agents/transport.py `pace_fetches`), so its batches grow with the rate, and their
    fixed costs (a Kafka transaction, a Redis or HBase round trip) stay bounded a second.
    (A round interval of its own on top of that let a round wait out most of a round
    again after its fetch had come back: fetches every 16 ms, rounds every 15 ms out of
    phase, and the newest record of a round 15 ms old at its start.)
    """

    def __init__(self, stream: Any, max_batch: int) -> None:
        self._manual = stream.noack()
        self._max_batch = max_batch
        self._queue: asyncio.Queue[EventT] = asyncio.Queue(maxsize=2 * max_batch)

    def waiting(self) -> bool:
        """Whether events are already queued for the next batch."""
        return not self._queue.empty()

    async def ack(self, events: Sequence[EventT]) -> None:
        for event in events:
            await self._manual.ack(event)

    async def _feed(self) -> None:
        async for event in self._manual.events():
            await self._queue.put(event)

    async def __aiter__(self) -> AsyncIterator[list[EventT]]:
        queue = self._queue
        feeder = asyncio.create_task(self._feed(), name="imflow-batch-feeder")
        try:
            while True:
                first = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({first, feeder},
                                             return_when=asyncio.FIRST_COMPLETED)
                if first not in done:
                    first.cancel()
                    feeder.result()  # the stream ended: re-raise its error, if any
                    return
                batch = [first.result()]
                while len(batch) < self._max_batch and await _more_coming(queue):
                    while len(batch) < self._max_batch and not queue.empty():
                        batch.append(queue.get_nowait())
                yield batch
        finally:
            feeder.cancel()


async def _more_coming(queue: asyncio.Queue[Any]) -> bool:
    """Whether events are queued, or come within a few turns of the event loop: the
    events of one fetch reach the queue one by one, each through Faust's consumer loop,
    the stream and the feeder, so the first of them wakes the batch loop before the rest
    are there (a round per few events, not per fetch)."""
    for _ in range(SETTLE_TURNS):
        if not queue.empty():
            return True
        await asyncio.sleep(0)
    return not queue.empty()


async def event_batches(stream: Any, max_batch: int) -> AsyncIterator[list[EventT]]:
    """`EventBatches`, each batch acked once the caller's loop body is done with it."""
    batches = EventBatches(stream, max_batch)
    async for batch in batches:
        yield batch
        await batches.ack(batch)


async def sequenced_batches(
    stream: Any, settings: Settings, dead_letters: DeadLetters, agent: str = ""
) -> AsyncIterable[Sequence[SequencedRecord]]:
    """Batches of parsed `imflow.messages` records; malformed ones go to dead-letter."""
    consumed = metrics.RECORDS.labels(agent)
    sizes = metrics.BATCH_RECORDS.labels(agent)
    async for events in event_batches(stream, settings.agent_batch_max):
        consumed.inc(len(events))
        sizes.observe(len(events))
        records: list[SequencedRecord] = []
        for event in events:
            for item in parse_sequenced_items(event.message.value):
                if item.record is not None:
                    records.append(item.record)
                else:
                    await dead_letters.send(event, item.error or "invalid sequenced record",
                                            index=item.index, item=item.raw)
        yield records


def create_sink_app(sink: Sink, settings: Settings) -> faust.App:
    """A Faust app `<prefix>-<sink name>` whose one agent applies batches of
    `imflow.messages` to the sink (app/usecases/sinks.py).

    The sink's client (Redis or HBase) is started with the app; the sink is made once
    the agent starts (the client is connected by then). A failing batch is retried until
    it succeeds, never skipped (G3).
    """
    name = sink.name
    client: RedisService | HistoryService = (
        RedisService(settings) if sink.uses == "redis" else HistoryService(settings))
    app = create_faust_app(name, settings)
    app.add_dependency(client)
    dead_letters = DeadLetters(app, settings, name)
    applied = metrics.MESSAGES.labels(name)
    batch_time = metrics.BATCH_SECONDS.labels(name, metrics.STORES.get(name, name))

    async def apply_batches(stream: Any) -> None:
        handle = sink.make(settings, client.client if isinstance(client, RedisService)
                           else client.store)
        async for records in sequenced_batches(stream, settings, dead_letters, name):
            if records:
                started = time.perf_counter()
                await retry_forever(f"{name} batch", partial(handle, list(records)),
                                    agent=name)
                batch_time.observe(time.perf_counter() - started)
                applied.inc(len(records))

    app.agent(topic(app, settings.topic_messages), name=f"{name}-sink")(apply_batches)
    return app
