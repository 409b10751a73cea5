"""The sequencer's Faust table: per-conversation seq, the retry dedup window, memberships.

The three kinds of state share ONE changelog-backed table, under key prefixes
(`conv:`, `dedup:`, `members:`; see agents/sequencing.py). One table means one changelog
topic, and Kafka keeps the writes of one partition in order: that order is what makes a
crash at any point recoverable without gaps or duplicate seqs. Three separate tables
would be three topics that could be flushed in any order.

Writes happen after a batch's outputs are acked, when Faust's "current event" is no
longer the record that caused them; so the changelog partition of each write is pinned
explicitly (it is always the inbound partition of the record's conversation). The
sequencer applies a batch's writes in memory and logs them itself (`apply`,
`send_writes`), with the next batch's outputs; deletes go through Faust.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faust
import orjson
from aiokafka.structs import RecordMetadata
from faust.types import TP, ProducerT

from agents.sequencing import DEDUP
from app.settings import Settings

_pinned_partition: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "imflow_pinned_partition", default=None
)


class PinnedPartitionTable(faust.Table):
    """A table whose changelog partition is chosen by the writer, not by the current event."""

    def partition_for_key(self, key: Any) -> int | None:
        partition = _pinned_partition.get()
        if partition is None:
            return super().partition_for_key(key)
        return partition

    @contextmanager
    def pinned(self, partition: int) -> Iterator[None]:
        token = _pinned_partition.set(partition)
        try:
            yield
        finally:
            _pinned_partition.reset(token)

    def apply(self, writes: list[tuple[int, str, Any]]) -> None:
        """Set the values in memory only; `send_writes` logs them to the changelog."""
        for _, key, value in writes:
            self.data[key] = value

    async def send_writes(self, producer: ProducerT, writes: list[tuple[int, str, Any]]
                          ) -> list[Awaitable[RecordMetadata]]:
        """Send changelog records for writes (partition, key, value), in order; returns
        their ack futures. With `apply`, the same effect as `self[key] = value` per write,
        without Faust's per-write buffering (a third of the sequencer's CPU). Resending
        the same writes after a failure is harmless: the last write of a key wins."""
        topic = self.changelog_topic.get_topic_name()
        return [await producer.send(topic, orjson.dumps(key), orjson.dumps(value), partition,
                                    None, None)
                for partition, key, value in writes]

    def mark_persisted(self, acked: Sequence[RecordMetadata]) -> None:
        """Record the changelog offsets written (what a RocksDB store needs for recovery)."""
        last: dict[TP, int] = {}
        for sent in acked:
            last[TP(sent.topic, sent.partition)] = sent.offset
        for tp, offset in last.items():
            self.data.set_persisted_offset(tp, offset)

    def delete(self, partition: int, key: str) -> None:
        with self.pinned(partition):
            del self[key]


def create_state_table(app: faust.App, settings: Settings) -> PinnedPartitionTable:
    table = PinnedPartitionTable(
        app,
        name="sequencer-state",
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.partitions,
        schema=faust.Schema(key_serializer="json", value_serializer="json"),
        help="imflow sequencer: conv seq counters, dedup window, group memberships",
    )
    app.tables.add(table)
    return table


def prune_dedup(table: PinnedPartitionTable, *, window_s: int, active: set[int]) -> int:
    """Forget dedup entries older than the window in the partitions this worker owns."""
    cutoff_ms = (time.time() - window_s) * 1000
    expired = [
        (value["partition"], key)
        for key, value in list(table.items())
        if key.startswith(DEDUP) and value["ts"] < cutoff_ms and value["partition"] in active
    ]
    for partition, key in expired:
        table.delete(partition, key)
    return len(expired)
