"""Sequencer agent: `imflow.inbound` -> `imflow.messages`, one order per conversation.

Run: `faust -L uvloop -A agents.sequencer worker --without-web`. agents/sequencing.py
holds the decisions; tables/ the state (local RocksDB + changelogs).

A sequencer process writes through one transactional producer, its *writer*
(`transactional_id = <app id>-w-<random>`, a new one for every consumer generation): a
round's sequenced records of all of its partitions, their state changes (both
changelogs, each partition's position among them) and its dead letters are committed
together or not at all, one Kafka transaction a round. (A transaction per partition and
round, as before, cost the client and the broker about 2.7 CPU-ms each: at 1,000 msg/s
on four partitions, 169 transactions a second.)

Before its writer sequences a partition, the process *claims* it:
1. it starts the partition's claim producer (`<app id>-p<partition>`), which fences any
   other process's claim of that partition still under way: one claim at a time;
2. it reads the partition's state changelog to its committed end, where the last claim
   names the writer before it, and fences that writer: a producer started with its id
   aborts its open transaction, and it can commit nothing more, in any process;
3. it reads the changelog to its end again (now no write can land below it), and
4. commits the claim `writer = <its writer's id>` through the claim producer.
A writer fenced by someone's claim can commit nothing for any of its partitions: its
process waits for the rebalance that moved the partition, or claims all of its
partitions again for a new writer. That makes three things true at once:
- **Fencing.** Once a process claimed a partition, the previous owner (paused, or not
  yet aware of the rebalance) can commit nothing, so no reader (sinks and `replay` read
  committed records only) and no later recovery sees its writes.
- **No loss, no reuse of a seq.** The new owner reads the changelog to its committed
  end after fencing, so it starts from exactly the state that matches the committed
  outputs and offsets; a record at or below the stored position is skipped. A
  transaction whose outcome is unknown (a Kafka outage) is settled the same way: the
  process claims its partitions again for a new writer, which fences the old one.
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
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
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
    Transactions,
    Write,
    ensure_topics,
    partition_of,
    topic_partitions,
)
from tables.changelog import ChangelogFollower
from tables.sequencer_state import (
    Changes,
    LocalState,
    dedup_record,
    state_records,
    writer_record,
)

log = logging.getLogger(__name__)

PRUNE_CHUNK = 10_000
RETRY_MAX_S = 5.0
CLAIM_POLL_S = 0.005


@dataclass
class Plan:
    """One partition's part of a round: its state changes and the records that carry
    them, in this order: `messages` to imflow.messages, `states` state changelog records,
    the dedup record if `dedup`, then dead letters."""

    partition: int
    changes: Changes
    writes: list[Write]
    messages: int
    states: int
    dedup: bool
    outputs: int
    dead: int


class PartitionSequencer:
    """One inbound partition while this process owns it: its claim and its part of a round."""

    def __init__(self, partition: int, owner: Sequencer) -> None:
        self.partition = partition
        self._owner = owner
        self.claim_id = f"{owner.app.conf.id}-p{partition}"

    async def claim(self, writer_id: str) -> None:
        """Make `writer_id` the only writer of this partition, and the local state the
        committed one (see the module docstring, steps 1-4)."""
        owner, p = self._owner, self.partition
        follower, store = owner.follower, owner.store
        began = time.monotonic()
        claim = await owner.new_producer(self.claim_id)
        try:
            await follower.catch_up(p)
            previous = store.writer(p)
            if previous is not None and previous != writer_id:
                await owner.fence(previous)
                await follower.catch_up(p)
            if store.writer(p) != writer_id:
                key, value = writer_record(writer_id)
                await claim.commit([Write(follower.state_topic, key, value, p)])
                await self._await_claim(writer_id)
        finally:
            await claim.close()
        log.info("partition %d claimed for %s in %.2fs (position %d)", p, writer_id,
                 time.monotonic() - began, store.position(p))

    async def _await_claim(self, writer_id: str) -> None:
        """Read the changelog until it holds the claim just committed: Kafka answers the
        commit before it writes the markers that make the claim readable."""
        owner, p = self._owner, self.partition
        deadline = time.monotonic() + owner.settings.sequencer_request_timeout_s
        await owner.follower.catch_up(p)
        while owner.store.writer(p) != writer_id:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"partition {p}: the claim of {writer_id} is not "
                                       f"readable (last claim: {owner.store.writer(p)})")
            await asyncio.sleep(CLAIM_POLL_S)
            await owner.follower.catch_up(p)

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

    async def plan(self, events: Sequence[EventT]) -> Plan | None:
        """Decide the events that continue this partition's log, from its committed state;
        None when there are none (all done already)."""
        owner, settings, p = self._owner, self._owner.settings, self.partition
        store = owner.store
        fresh = await self._in_order(events, store.position(p))
        if not fresh:
            return None
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
        messages = self._message_writes(outputs)
        states = [Write(owner.follower.state_topic, key, value, p)
                  for key, value in state_records(changes)]
        dedup = dedup_record(changes)
        writes = messages + states
        if dedup is not None:
            writes.append(Write(owner.follower.dedup_topic, None, dedup, p))
        writes += [Write(settings.topic_dead_letter, key, value) for key, value in dead]
        return Plan(p, changes, writes, messages=len(messages), states=len(states),
                    dedup=dedup is not None, outputs=len(outputs), dead=len(dead))


class Sequencer(mode.Service):
    """The sequencer's partitions, its writer, its local state and the changelog follower."""

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
        self._writer: Transactions | None = None
        self._mine: set[int] = set()  # the partitions of the current assignment
        self._generation = -1  # the consumer generation they were assigned in (-1: none)
        self._ready = asyncio.Event()  # set while all of them are claimed for the writer
        self._round = asyncio.Lock()  # one round, or one claim of the partitions, at a time
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
        self._ready.clear()
        await self._close_writer()  # a round under way fails; its events come again
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

    async def new_producer(self, transactional_id: str) -> Transactions:
        """A started transactional producer: every earlier one of the id is fenced."""
        return await Transactions.fence(self.settings, transactional_id)

    async def fence(self, transactional_id: str) -> None:
        """Fence every producer of `transactional_id` (a previous writer)."""
        await Transactions.fence_only(self.settings, transactional_id)

    def _partition(self, partition: int) -> PartitionSequencer:
        if partition not in self._partitions:
            self._partitions[partition] = PartitionSequencer(partition, self)
        return self._partitions[partition]

    def _inbound(self, tps: set[TP]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.settings.topic_inbound}

    def _current(self, generation: int) -> bool:
        """Whether the consumer is still in `generation` (a rebalance changes it)."""
        return self.app.consumer_generation_id == generation

    async def _on_revoked(self, sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        if self._inbound(revoked):
            self._ready.clear()  # no new round; the one under way still finishes
            self._generation = -1

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        generation = self.app.consumer_generation_id
        self._ready.clear()
        self._mine, self._generation = self._inbound(assigned), generation
        if self._rebalance is not None and not self._rebalance.done():
            self._rebalance.cancel()
        self._rebalance = asyncio.create_task(self._take_over(generation),
                                              name="imflow-take-over")

    async def _take_over(self, generation: int) -> None:
        """The partitions assigned in a new generation are claimed again, all of them: in
        between, another process may have owned any of them (a pause past the session
        timeout)."""
        began, delay = time.monotonic(), 0.2
        while self._current(generation):
            try:
                async with self._round:
                    if not self._current(generation):
                        return
                    await self._claim_all()
                log.info("generation %d: sequencing partitions %s (ready in %.2fs), standby "
                         "for the others", generation, sorted(self._mine),
                         time.monotonic() - began)
                return
            except (StoreUnavailable, Fenced, TimeoutError, ValueError) as exc:
                log.warning("generation %d: claiming partitions failed (%r); retrying in "
                            "%.1fs", generation, exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)
            except Exception as exc:
                await self.crash(exc)
                raise

    async def _claim_all(self) -> None:
        """A new writer, and every partition of the assignment claimed for it; the others
        followed as a standby. Called under the round lock."""
        self._ready.clear()
        await self._close_writer()
        self.follower.follow((await self.follower.partitions()) - self._mine)
        self._writer = await self.new_producer(f"{self.app.conf.id}-w-{uuid.uuid4().hex[:12]}")
        claims = await asyncio.gather(
            *(self._partition(p).claim(self._writer.transactional_id)
              for p in sorted(self._mine)), return_exceptions=True)  # none left running
        for failed in claims:
            if isinstance(failed, BaseException):
                raise failed
        self._ready.set()

    async def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()

    async def _ready_for(self, generation: int) -> bool:
        """Wait until the assignment of `generation` is claimed; False once the consumer
        left that generation (a batch fetched before a rebalance)."""
        while not (self._ready.is_set() and self._generation == generation):
            if not self._current(generation):
                return False
            try:
                await asyncio.wait_for(self._ready.wait(), 0.5)
            except TimeoutError:
                pass
        return self._current(generation)

    async def process(self, events: Sequence[EventT]) -> list[EventT]:
        """Sequence a round of events of the current generation, one transaction for all
        of their partitions; the events that are done (at or below the committed
        position), for Faust to commit.

        After a failed transaction the partitions are claimed again for a new writer
        (which fences the old one, aborting the failed transaction) and the round is
        decided again from the state Kafka committed; what the failed transaction did
        commit is skipped by position. Before claiming again, it waits for a heartbeat or
        two: a process paused past its session timeout must learn that it lost a
        partition before it can fence the process that took it over.
        """
        generation = self.app.consumer_generation_id
        by_partition: dict[int, list[EventT]] = defaultdict(list)
        for event in events:
            if event.message.generation_id == generation:
                by_partition[event.message.partition].append(event)
        if not by_partition or not await self._ready_for(generation):
            return []
        settings = self.settings
        delay = max(0.2, settings.agent_heartbeat_interval_s)
        async with self._round:
            while self._generation == generation and self._current(generation):
                try:
                    if not self._ready.is_set():
                        await self._claim_all()
                    await self._transact(by_partition)
                    return [e for p, batch in by_partition.items() for e in batch
                            if e.message.offset <= self.store.position(p)]
                except Fenced as exc:
                    metrics.RETRIES.labels("sequencer", "fenced transaction").inc()
                    log.warning("writer fenced (%s); waiting for the rebalance", exc)
                    wait = 2 * settings.agent_session_timeout_s
                except (StoreUnavailable, TimeoutError) as exc:
                    metrics.RETRIES.labels("sequencer", "failed transaction").inc()
                    log.warning("transaction failed (%r); claiming the partitions again "
                                "for a new writer and retrying in %.1fs", exc, delay)
                    wait, delay = delay, min(2 * delay, RETRY_MAX_S)
                self._ready.clear()
                if await self._revoked_within(wait, generation):
                    return []
        return []

    async def _revoked_within(self, seconds: float, generation: int) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._generation != generation or not self._current(generation):
                return True
            await asyncio.sleep(0.1)
        return False

    async def _transact(self, by_partition: dict[int, list[EventT]]) -> None:
        """One transaction of the round's plans, then each partition's local state."""
        writer = self._writer
        if writer is None:
            raise StoreUnavailable("no writer (the partitions are not claimed)")
        plans = [plan for p, batch in sorted(by_partition.items())
                 if (plan := await self._partition(p).plan(batch)) is not None]
        if not plans:
            return
        got = await writer.commit([w for plan in plans for w in plan.writes])
        at = 0
        for plan in plans:
            offsets, at = got[at:at + len(plan.writes)], at + len(plan.writes)
            states = offsets[plan.messages:plan.messages + plan.states]
            dedup = offsets[plan.messages + plan.states] if plan.dedup else None
            self.store.commit(plan.partition, plan.changes, state_offset=max(states),
                              dedup_offset=dedup)
            self.sequenced += plan.outputs
            metrics.MESSAGES.labels("sequencer").inc(plan.outputs)
            if plan.dead:
                metrics.DEAD_LETTERS.labels("sequencer").inc(plan.dead)

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
    app = create_faust_app("sequencer", settings, round_ms=settings.sequencer_round_ms)
    sequencer = Sequencer(app, settings)
    app.add_dependency(sequencer)
    inbound = topic(app, settings.topic_inbound)

    consumed = metrics.RECORDS.labels("sequencer")
    sizes = metrics.BATCH_RECORDS.labels("sequencer")
    batch_time = metrics.BATCH_SECONDS.labels("sequencer", metrics.STORES["sequencer"])

    async def sequence(stream: Any) -> None:
        batches = EventBatches(stream, settings.agent_batch_max)
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
