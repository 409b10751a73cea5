"""Sequencer agent: `imflow.inbound` -> `imflow.messages`, one order per conversation.

Run: `faust -L uvloop -A agents.sequencer worker --without-web`. agents/sequencing.py
holds the decisions; tables/ the state (local RocksDB + changelogs).

Each inbound partition is sequenced under a Kafka transaction of its own
(`transactional_id = <app id>-p<partition>`): a batch's sequenced records, its state
changes (both changelogs, the partition's position among them) and its dead letters are
committed together or not at all. That makes three things true at once:
- **Fencing.** A process that takes a partition over starts that partition's producer,
  which bumps the transactional id's epoch: from then on the previous owner (paused, or
  not yet aware of the rebalance) can commit nothing, so no reader (sinks and `replay`
  read committed records only) and no later recovery sees its writes.
- **No loss, no reuse of a seq.** The new owner reads the changelog to its committed
  end before it sequences, so it starts from exactly the state that matches the
  committed outputs and offsets; a record at or below the stored position is skipped.
- **Events fetched before a rebalance are dropped** (they carry the consumer generation
  they were fetched in): Faust seeks every assigned partition to its committed offset
  after a rebalance, so they come again, in order, after the state is caught up.
The consumer group's offset is only where fetching resumes, not what was done: the
position in the state changelog is. So it is not part of the transactions (which saves
two of their five round trips to the coordinator, AddOffsetsToTxn and TxnOffsetCommit):
the agent acks an event to Faust once a committed transaction holds it (or it was at or
below the position), and Faust commits the acked offsets every half second. A group
offset behind the position costs a re-fetch of what is then skipped; one ahead of it
(which the acks never make) would be caught by `_in_order`, which rewinds to the record
after the position.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import mode
from faust.types import TP, EventT

from agents import metrics
from agents.base import EventBatches, create_faust_app, dead_letter_value, topic
from agents.sequencing import decide
from app.errors import Fenced, StoreUnavailable
from app.models import InboundRecord, encode_batch, encode_sequenced, pack, parse_inbound_items
from app.settings import Settings, get_settings
from app.stores.kafka import (
    OffsetProbe,
    PartitionTransactions,
    Write,
    ensure_topics,
    partition_of,
    topic_partitions,
)
from tables.changelog import ChangelogFollower
from tables.sequencer_state import Changes, LocalState, dedup_record, state_records

log = logging.getLogger(__name__)

PRUNE_CHUNK = 10_000
RETRY_MAX_S = 5.0


class PartitionSequencer:
    """Sequences one inbound partition while this process owns it."""

    def __init__(self, partition: int, owner: Sequencer) -> None:
        self.partition = partition
        self._owner = owner
        self._producer: PartitionTransactions | None = None
        self.generation = -1  # the consumer generation this partition is ready for
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self.transactional_id = f"{owner.app.conf.id}-p{partition}"

    # -- ownership

    async def take_over(self, generation: int) -> None:
        """Fence every earlier producer of this partition, catch the local state up to the
        committed changelog, then accept the generation's events."""
        async with self._lock:
            self._ready.clear()
            began = time.monotonic()
            if not await self._fence_and_catch_up(generation):
                return  # a newer rebalance took over
            self.generation = generation
            self._ready.set()
            log.info("partition %d ready for generation %d in %.2fs (position %d)",
                     self.partition, generation, time.monotonic() - began,
                     self._owner.store.position(self.partition))

    @property
    def holds_producer(self) -> bool:
        return self._producer is not None

    def revoke(self) -> None:
        """Stop accepting events (a transaction under way still finishes)."""
        self.generation = -1
        self._ready.clear()

    async def release(self) -> None:
        """The partition went elsewhere: close its producer once its last batch is done."""
        self.revoke()
        async with self._lock:
            await self._close_producer()

    def _current(self, generation: int) -> bool:
        """Whether the consumer is still in `generation` (a rebalance changes it)."""
        return self._owner.app.consumer_generation_id == generation

    async def _fence_and_catch_up(self, generation: int) -> bool:
        """Start a new producer (the fence) and catch up; False if the consumer left
        `generation` meanwhile (then fencing would take the partition from its new owner)."""
        delay = 0.2
        while self._current(generation):
            try:
                await self._close_producer()
                self._producer = await self._owner.new_producer(self.transactional_id)
                took = await self._owner.follower.catch_up(self.partition)
                log.debug("partition %d caught up in %.2fs", self.partition, took)
                return True
            except (StoreUnavailable, TimeoutError) as exc:
                log.warning("partition %d: fencing/catch-up failed (%r); retrying in %.1fs",
                            self.partition, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
        return False

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()

    async def _ready_for(self, generation: int) -> bool:
        """Wait until the partition is taken over for `generation`; False once the
        consumer left that generation (a batch fetched before a rebalance)."""
        while not (self._ready.is_set() and self.generation == generation):
            if not self._current(generation):
                return False
            try:
                await asyncio.wait_for(self._ready.wait(), 0.5)
            except TimeoutError:
                pass
        return self._current(generation)

    # -- sequencing

    async def sequence(self, events: Sequence[EventT], generation: int) -> list[EventT]:
        """Sequence a batch of this partition's events fetched in `generation`; the events
        that are done (at or below the committed position), for Faust to commit.

        After a failed transaction the partition is fenced again (which also aborts the
        failed one) and caught up, and the batch is decided again from the state that
        Kafka committed; what the failed transaction did commit is skipped by position.
        Before re-fencing, it waits for a heartbeat or two: a process paused past its
        session timeout must learn that it lost the partition before it can fence the
        process that took it over.
        """
        if not await self._ready_for(generation):
            return []
        settings = self._owner.settings
        delay = max(0.2, settings.agent_heartbeat_interval_s)
        async with self._lock:
            while self.generation == generation:
                try:
                    await self._transact(events)
                    position = self._owner.store.position(self.partition)
                    return [e for e in events if e.message.offset <= position]
                except Fenced as exc:
                    metrics.RETRIES.labels("sequencer", "fenced transaction").inc()
                    log.warning("partition %d fenced (%s); waiting for the rebalance",
                                self.partition, exc)
                    wait = 2 * settings.agent_session_timeout_s
                except (StoreUnavailable, TimeoutError) as exc:
                    metrics.RETRIES.labels("sequencer", "failed transaction").inc()
                    log.warning("partition %d: transaction failed (%r); fencing again, "
                                "catching up and retrying in %.1fs", self.partition, exc,
                                delay)
                    wait, delay = delay, min(2 * delay, RETRY_MAX_S)
                if await self._revoked_within(wait, generation):
                    return []
                await self._fence_and_catch_up(generation)
        return []

    async def _revoked_within(self, seconds: float, generation: int) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.generation != generation or not self._current(generation):
                return True
            await asyncio.sleep(0.1)
        return False

    async def _in_order(self, events: Sequence[EventT], position: int) -> list[EventT]:
        """The events that continue the log right after `position`, in order.

        A record at or below the position was applied already. A record past a gap is
        applied only once Kafka confirms the gap (no committed record in between, e.g. an
        outside producer's transaction markers): a record fetched from a stale position
        around a rebalance, ahead of the committed offset, must not move the position
        past records that were never sequenced (the loss this design ends). Then the
        consumer is rewound to the record after the position, and the rest waits for it.
        """
        expected, accepted = position + 1, []
        for event in events:
            offset = event.message.offset
            if offset < expected:
                continue  # applied already, or a second copy of one in this batch
            if offset > expected and await self._owner.first_offset(
                    self.partition, expected) != offset:
                log.warning("partition %d: record %d arrived where %d was due; rewinding",
                            self.partition, offset, expected)
                await self._owner.app.consumer.seek(
                    TP(self._owner.settings.topic_inbound, self.partition), expected)
                break
            accepted.append(event)
            expected = offset + 1
        return accepted

    def _message_writes(self, outputs: list[tuple[bytes, bytes]]) -> list[Write]:
        """The sequenced records as few `imflow.messages` records as fit under the batch
        size: a run of one stays the single record it is (key: its conversation)."""
        settings = self._owner.settings
        topic, p = settings.topic_messages, self.partition
        values = [value for _, value in outputs]
        writes = []
        for start, end in pack(values, settings.record_batch_max_bytes):
            if end - start == 1:
                writes.append(Write(topic, outputs[start][0], values[start], p))
            else:
                writes.append(Write(topic, None, encode_batch(values[start:end]), p))
        return writes

    async def _transact(self, events: Sequence[EventT]) -> None:
        owner, settings, p = self._owner, self._owner.settings, self.partition
        store = owner.store
        position = store.position(p)
        fresh = await self._in_order(events, position)
        if not fresh:
            return
        changes = Changes(position=fresh[-1].message.offset)
        view = changes.over(store.view(p))
        outputs: list[tuple[bytes, bytes]] = []
        dead: list[tuple[bytes | None, bytes]] = []
        for event in fresh:
            msg = event.message
            items = parse_inbound_items(msg.value, max_body_bytes=settings.max_body_bytes)
            batched = len(items) > 1 or items[0].index is not None
            for item in items:
                record = item.record
                if record is None:
                    dead.append((msg.key, dead_letter_value(
                        msg, item.error or "invalid record", index=item.index, item=item.raw)))
                    continue
                reason: str | None
                if batched and not owner.owns(p, record):
                    reason = (f"conversation {record.conversation_id!r} belongs to another "
                              f"partition than {p}")
                else:
                    decision = decide(record, record_ts=int(msg.timestamp * 1000), state=view,
                                      read_threshold=settings.read_fanout_threshold)
                    reason = decision.reason if decision.status == "rejected" else None
                if reason is not None:
                    dead.append((msg.key, dead_letter_value(
                        msg, reason, index=item.index,
                        item=record.model_dump_json().encode() if batched else None)))
                elif decision.output is not None:
                    decision.record_in(changes)
                    out = decision.output
                    outputs.append((out.message.conversation_id.encode(),
                                    encode_sequenced(out)))
        producer = self._producer
        if producer is None:
            raise StoreUnavailable("partition has no producer (not fenced yet)")
        messages = self._message_writes(outputs)
        states = [Write(owner.follower.state_topic, key, value, p)
                  for key, value in state_records(changes)]
        dedup = dedup_record(changes)
        writes = messages + states
        if dedup is not None:
            writes.append(Write(owner.follower.dedup_topic, None, dedup, p))
        writes += [Write(settings.topic_dead_letter, key, value) for key, value in dead]
        got = await producer.commit(writes)
        first_state = len(messages)
        state_offset = max(got[first_state:first_state + len(states)])
        dedup_offset = got[first_state + len(states)] if dedup is not None else None
        store.commit(p, changes, state_offset=state_offset, dedup_offset=dedup_offset)
        owner.sequenced += len(outputs)
        metrics.MESSAGES.labels("sequencer").inc(len(outputs))
        if dead:
            metrics.DEAD_LETTERS.labels("sequencer").inc(len(dead))


class Sequencer(mode.Service):
    """The sequencer's partitions, their local state and the changelog follower."""

    def __init__(self, app: faust.App, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.settings = settings
        self._partitions: dict[int, PartitionSequencer] = {}
        self._store: LocalState | None = None
        self._follower: ChangelogFollower | None = None
        self._rebalance: asyncio.Task[None] | None = None
        self._probe: OffsetProbe | None = None
        self._inbound_partitions = 0
        self.sequenced = 0
        # mode's signal types want a receiver of any arguments; these take Faust's.
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    @property
    def store(self) -> LocalState:
        assert self._store is not None, "Sequencer not started"
        return self._store

    @property
    def follower(self) -> ChangelogFollower:
        assert self._follower is not None, "Sequencer not started"
        return self._follower

    async def on_start(self) -> None:
        await ensure_topics(self.settings)
        self._inbound_partitions = len(await topic_partitions(self.settings,
                                                              self.settings.topic_inbound))
        path = Path(self.settings.faust_data_dir) / f"{self.app.conf.id}-state"
        self._store = LocalState(path)
        self._follower = ChangelogFollower(self.settings, self._store)
        await self._follower.start()
        self._probe = OffsetProbe(self.settings, client_id=f"{self.app.conf.id}-gap-probe")
        await self._probe.start()

    async def on_stop(self) -> None:
        if self._rebalance is not None:
            self._rebalance.cancel()
        await asyncio.gather(*(ps.release() for ps in self._partitions.values()),
                             return_exceptions=True)
        if self._follower is not None:
            await self._follower.stop()
        if self._probe is not None:
            await self._probe.stop()
        if self._store is not None:
            self._store.close()

    def owns(self, partition: int, record: InboundRecord) -> bool:
        """Whether the record's conversation belongs to `partition` (Kafka's key hash):
        a batch record's items must, since a conversation's state lives in one partition."""
        key = record.conversation_id.encode()
        return partition_of(key, self._inbound_partitions) == partition

    async def first_offset(self, partition: int, offset: int) -> int:
        """The offset of the first committed inbound record at or after `offset` (the
        rare check of a gap in the offsets a partition's events arrive with)."""
        assert self._probe is not None, "Sequencer not started"
        return await self._probe.first_offset(self.settings.topic_inbound, partition, offset)

    async def new_producer(self, transactional_id: str) -> PartitionTransactions:
        """A started transactional producer: every earlier one of the id is fenced."""
        return await PartitionTransactions.fence(self.settings, transactional_id)

    def _partition(self, partition: int) -> PartitionSequencer:
        if partition not in self._partitions:
            self._partitions[partition] = PartitionSequencer(partition, self)
        return self._partitions[partition]

    def _inbound(self, tps: set[TP]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.settings.topic_inbound}

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        for p in self._inbound(revoked):
            self._partition(p).revoke()

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        generation = self.app.consumer_generation_id
        if self._rebalance is not None and not self._rebalance.done():
            self._rebalance.cancel()
        self._rebalance = asyncio.create_task(
            self._take_over(generation, self._inbound(assigned)), name="imflow-take-over")

    async def _take_over(self, generation: int, mine: set[int]) -> None:
        """Every partition assigned in a new generation is fenced and caught up again: in
        between, another process may have owned it (a pause past the session timeout)."""
        began, delay = time.monotonic(), 0.2
        while self.app.consumer_generation_id == generation:
            try:
                for p, ps in list(self._partitions.items()):
                    if p not in mine and ps.holds_producer:
                        await ps.release()
                self.follower.follow((await self.follower.partitions()) - mine)
                await asyncio.gather(*(self._partition(p).take_over(generation)
                                       for p in sorted(mine)))
                log.info("generation %d: sequencing partitions %s (ready in %.2fs), standby "
                         "for the others", generation, sorted(mine), time.monotonic() - began)
                return
            except (StoreUnavailable, TimeoutError, ValueError) as exc:
                log.warning("generation %d: taking partitions over failed (%r); retrying in "
                            "%.1fs", generation, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
            except Exception as exc:
                await self.crash(exc)
                raise

    async def process(self, events: Sequence[EventT]) -> list[EventT]:
        """Sequence the events of the current generation; the ones that are done."""
        generation = self.app.consumer_generation_id
        by_partition: dict[int, list[EventT]] = defaultdict(list)
        for event in events:
            if event.message.generation_id == generation:
                by_partition[event.message.partition].append(event)
        done = await asyncio.gather(*(self._partition(p).sequence(batch, generation)
                                      for p, batch in by_partition.items()))
        return [event for batch in done for event in batch]

    async def prune(self) -> int:
        """Forget dedup ids older than the window, in every partition held locally."""
        older_than = int((time.time() - self.settings.dedup_window_s) * 1000)
        total = 0
        for p in sorted(await self.follower.partitions()):
            while True:
                removed = self.store.prune(p, older_than_ms=older_than, limit=PRUNE_CHUNK)
                total += removed
                if removed < PRUNE_CHUNK:
                    break
                await asyncio.sleep(0)  # let batches through between chunks
        return total


def create_sequencer_app(settings: Settings) -> faust.App:
    app = create_faust_app("sequencer", settings)
    sequencer = Sequencer(app, settings)
    app.add_dependency(sequencer)
    inbound = topic(app, settings.topic_inbound)

    consumed = metrics.RECORDS.labels("sequencer")
    sizes = metrics.BATCH_RECORDS.labels("sequencer")
    batch_time = metrics.BATCH_SECONDS.labels("sequencer", metrics.STORES["sequencer"])

    async def sequence(stream: Any) -> None:
        batches = EventBatches(stream, settings.agent_batch_max, settings.agent_batch_linger_s)
        async for events in batches:
            consumed.inc(len(events))
            sizes.observe(len(events))
            started = time.perf_counter()
            await batches.ack(await sequencer.process(events))
            batch_time.observe(time.perf_counter() - started)

    app.agent(inbound, name="sequence")(sequence)

    @app.timer(interval=60.0)
    async def prune_dedup_window() -> None:
        pruned = await sequencer.prune()
        if pruned:
            log.info("pruned %d dedup ids older than %ss", pruned, settings.dedup_window_s)

    app.imflow_sequencer = sequencer  # type: ignore[attr-defined]
    return app


app = create_sequencer_app(get_settings())
