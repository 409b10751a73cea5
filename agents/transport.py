"""Faust's aiokafka transport, with the consumer's fetch wait taken from settings and
committed reads only.

Faust builds its worker consumer with `fetch_max_wait_ms=1500`, a fixed value. Measured
here (bench/breakdown.py, 400 msg/s): agents then fell ~1.5 s behind now and then and
stayed there, which put the sequencer's or the inbox agent's p50 at 1.3 s; with 100 ms
the same run gives 30-40 ms.

Faust reads `read_committed` only in its own exactly-once mode, which imflow does not
use; but the sequencer writes `imflow.messages` in Kafka transactions (a fenced or
aborted one must never reach a sink), and an outside producer may write
`imflow.inbound` transactionally. So every agent reads committed records only.

aiokafka passes both values to its fetcher when the consumer starts, so they are set on
the consumer Faust created, before it starts.

Transactional input leaves offsets no consumer ever sees (one commit marker per
transaction and partition, aborted records), and Faust 0.15.3's gap bookkeeping counts
them wrong: see `ShortFetchConsumer._add_gap`.

aiokafka 0.14 does not refresh its metadata when resetting a partition's position fails
on a stale leader: see `refresh_metadata_on_stale_leader`.

A busy agent fetches in rounds, not record by record: see `pace_fetches`.
"""

from __future__ import annotations

from typing import Any, cast

import aiokafka
import aiokafka.errors
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP


def refresh_metadata_on_stale_leader(consumer: aiokafka.AIOKafkaConsumer) -> None:
    """Make a failed offset lookup of the consumer's fetcher refresh the cluster metadata.

    A partition with no committed offset (Faust's `__assignor-__leader` topic) gets its
    position from a ListOffsets request to the leader the client believes in. When that
    is stale (a broker was killed and restarted), aiokafka 0.14's fetcher logs "Failed
    fetch offsets ... NotLeaderForPartitionError" and retries against the same broker
    every 100 ms without asking for new metadata, and it sends no fetch at all to that
    broker meanwhile, so every other partition it leads stalls too, until the periodic
    metadata refresh (5 minutes). Seen in CI: a sink stalled 126 s after the cluster
    fault test killed one process of each agent. Call after the consumer started.
    """
    fetcher, client = consumer._fetcher, consumer._client
    lookup = fetcher._proc_offset_request

    async def offset_request(node_id: int, topic_data: Any) -> Any:
        try:
            return await lookup(node_id, topic_data)
        except aiokafka.errors.KafkaError as exc:
            if exc.invalid_metadata:
                client.force_metadata_update()
            raise

    fetcher._proc_offset_request = offset_request


# What a fetch in a busy round asks the broker to gather before it answers early: more
# than a round ever holds, so the round's wait decides.
BUSY_MIN_BYTES = 1 << 20


def pace_fetches(consumer: aiokafka.AIOKafkaConsumer, busy_wait_ms: int) -> None:
    """Make the consumer fetch in rounds while records keep coming: after a fetch that
    returned records, the next one asks the broker to wait `busy_wait_ms` for more
    (min bytes above what a round holds); after an empty one, to answer at the first
    record (min bytes 1, the configured wait), so a message alone at an idle moment
    waits for nothing.

    With min bytes 1 throughout, a consumer fetches again as soon as anything new is
    there: under load every ingress round and every sequencer commit cost each agent a
    fetch round trip and its trip between Faust's consumer thread and its event loop
    (about 0.85 CPU-ms per fetch for an empty Faust agent here), so the agents took
    whatever CPU was free at any rate (the whole box at 400 msg/s as at 1,000). Paced,
    a busy agent does at most 1,000 / `busy_wait_ms` fetches a second per broker.
    Call after the consumer started (it wraps the fetcher's fetch request)."""
    fetcher = consumer._fetcher
    idle_wait_ms = fetcher._fetch_max_wait_ms
    fetch = fetcher._proc_fetch_request

    async def paced(assignment: Any, node_id: int, request: Any) -> bool:
        got_records = bool(await fetch(assignment, node_id, request))
        fetcher._fetch_min_bytes = BUSY_MIN_BYTES if got_records else 1
        fetcher._fetch_max_wait_ms = busy_wait_ms if got_records else idle_wait_ms
        return got_records

    fetcher._proc_fetch_request = paced


class ShortFetchConsumerThread(AIOKafkaConsumerThread):
    async def on_start(self) -> None:
        await super().on_start()
        assert self._consumer is not None
        refresh_metadata_on_stale_leader(self._consumer)
        busy_wait_ms = cast(ShortFetchTransport, self.transport).fetch_busy_wait_ms
        if busy_wait_ms > 0:
            pace_fetches(self._consumer, busy_wait_ms)

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        consumer._isolation_level = "read_committed"
        return consumer


class ShortFetchConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Mark the offsets in [offset_from, offset_to) as done: ones the consumer skipped.

        Faust calls this with offset_to = the offset of the record it is about to hand
        to the stream, and its own version marks [offset_from, offset_to] and starts at
        the committed offset + 1. The record then counts as done twice (once as a gap,
        once when acked), and `_new_offset`'s run of consecutive offsets stops at the
        duplicate: with a transaction marker every few records, each commit advanced the
        committed offset by one transaction only, so a sink's committed offset fell ever
        further behind under load (measured: 5,000 records per partition after a bench
        run), and a restarted sink would redo all of it.

        The skipped offsets join the acked ones directly (Faust's own version keeps an
        IntervalTree and rebuilds it with `merge_overlaps` on every gap: with a marker
        after each of a catching-up sink's thousands of transactions that was quadratic,
        two thirds of the history agent's CPU). An offset already there (a range read
        again after a seek) is not added twice: a duplicate would cut the run short.
        """
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)  # `committed` = the next offset to read
        if offset_from < offset_to:
            done = self._acked_index[tp]
            skipped = [o for o in range(offset_from, offset_to) if o not in done]
            done.update(skipped)
            self._acked[tp].extend(skipped)


class ShortFetchTransport(Transport):
    """Install with `app.transport = ShortFetchTransport(app.conf.broker_consumer, app,
    fetch_max_wait_ms=..., fetch_busy_wait_ms=...)` right after creating the app."""

    Consumer = ShortFetchConsumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, fetch_busy_wait_ms: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_busy_wait_ms = fetch_busy_wait_ms
