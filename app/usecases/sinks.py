"""The sinks of `imflow.messages`, in one registry.

A sink applies batches of sequenced records to one store, idempotently. The agent that
runs it (agents/<name>.py, one Procfile line), `imflow replay`, the test stack and bench
all read this registry, so a new sink is its entry here, its agent module and its
Procfile line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from app.models import SequencedRecord
from app.settings import Settings
from app.stores.feeds import FeedStore
from app.stores.history import HistoryStore
from app.stores.push import PushPublisher
from app.usecases.delivery import OfflineDelivery


@dataclass(frozen=True)
class Applied:
    expected: int  # what the batch asked the sink to write
    written: int  # of which was new (the rest was there: a redelivery or a replay)


Apply = Callable[[list[SequencedRecord]], Awaitable[Applied]]


@dataclass(frozen=True)
class Sink:
    name: str
    uses: Literal["redis", "hbase"]  # the client `make` gets: a Redis client or a HistoryStore
    make: Callable[[Settings, Any], Apply]
    doc: str


def _inbox(settings: Settings, redis: Any) -> Apply:
    delivery = OfflineDelivery(redis, retention_s=settings.inbox_retention_s,
                               replica_acks=settings.redis_replica_acks)

    async def apply(records: list[SequencedRecord]) -> Applied:
        delivered = await delivery.apply(records)
        return Applied(delivered.expected, delivered.written)
    return apply


def _history(settings: Settings, store: HistoryStore) -> Apply:
    async def apply(records: list[SequencedRecord]) -> Applied:
        await store.write(records)
        return Applied(len(records), len(records))  # a put of the same row is a no-op
    return apply


def _push(settings: Settings, redis: Any) -> Apply:
    feeds = FeedStore(redis, retention_s=settings.inbox_retention_s)
    publisher = PushPublisher(redis, feed_wait_s=settings.feed_wait_s, feeds=feeds)

    async def apply(records: list[SequencedRecord]) -> Applied:
        sent = await publisher.publish(records)
        return Applied(sent, sent)
    return apply


SINKS: dict[str, Sink] = {s.name: s for s in (
    Sink("inbox", "redis", _inbox,
         "every recipient's Redis inbox (write fan-out), large groups' feeds, the group "
         "membership projection"),
    Sink("history", "hbase", _history, "each conversation's HBase history, once per message"),
    Sink("push", "redis", _push, "online devices, through per-user Redis pub/sub"),
)}
