"""Reads the sequencer's changelogs into the local store: catch-up and standby.

One consumer (no group, `read_committed`, so an aborted or fenced transaction's writes
are never applied) is assigned the changelog partitions of
- the partitions this process follows as a standby (every partition another process
  owns), so that a takeover only reads the tail written since, and
- the partitions it is catching up on before it sequences them (after a restart, a
  takeover, or a transaction whose outcome it did not learn).

Every (re)assignment seeks each partition to the offset after the last one the local
store applied, and a record at or below it is skipped, so nothing is applied twice or
out of order, whoever reads first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.errors import StoreUnavailable
from app.settings import Settings
from app.stores.kafka import CLIENT_ERRORS, topic_partitions
from tables.sequencer_state import LocalState

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
# A catch-up from scratch reads a whole window; records are small (a conversation's state
# is ~60 bytes), so a fetch's bytes turn into many Python objects: bound both.
FETCH_BYTES = 512 * 1024
MAX_RECORDS = 5000


@dataclass
class _CatchUp:
    ends: dict[TopicPartition, int]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())


class ChangelogFollower:
    def __init__(self, settings: Settings, store: LocalState) -> None:
        self._settings = settings
        self._store = store
        self.state_topic = settings.sequencer_state_topic
        self.dedup_topic = settings.sequencer_dedup_topic
        self._consumer: AIOKafkaConsumer | None = None
        self._standby: set[int] = set()
        self._all_partitions: set[int] = set()
        self._catching_up: dict[int, _CatchUp] = {}
        self._task: asyncio.Task[None] | None = None
        self._reassign = asyncio.Event()
        self.applied_records = 0

    @property
    def consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "ChangelogFollower not started"
        return self._consumer

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=FETCH_BYTES,
            fetch_max_wait_ms=POLL_TIMEOUT_MS,
            client_id=f"{self._settings.app_prefix}-sequencer-changelog",
        )
        try:
            await self._consumer.start()
        except CLIENT_ERRORS as exc:
            raise StoreUnavailable(f"changelog consumer: {exc!r}") from exc
        self._task = asyncio.create_task(self._run(), name="imflow-changelog-follower")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for catch_up in self._catching_up.values():
            if not catch_up.done.done():
                catch_up.done.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    async def partitions(self) -> set[int]:
        """The changelogs' partitions (= the inbound topic's)."""
        if not self._all_partitions:
            self._all_partitions = await topic_partitions(self._settings, self.state_topic)
        return set(self._all_partitions)

    def follow(self, standby: Iterable[int]) -> None:
        """Keep these partitions' local copies current (they are owned elsewhere)."""
        self._standby = set(standby)
        self._reassign.set()

    async def end_offsets(self, partition: int) -> dict[TopicPartition, int]:
        """The committed end of both changelogs of a partition (read_committed: the last
        stable offset), to be read before sequencing it."""
        tps = [TopicPartition(self.state_topic, partition),
               TopicPartition(self.dedup_topic, partition)]
        try:
            ends = await self.consumer.end_offsets(tps)
        except CLIENT_ERRORS as exc:
            raise StoreUnavailable(f"changelog end offsets: {exc!r}") from exc
        return {tp: int(ends[tp]) for tp in tps}

    async def catch_up(self, partition: int) -> float:
        """Apply both changelogs of a partition up to their current committed end;
        returns the seconds it took. Call it after fencing the previous owner, so that no
        further write can land below that end."""
        began = time.monotonic()
        ends = await self.end_offsets(partition)
        await self._check_local_copy(partition, ends)
        if self._caught_up(partition, ends):
            return time.monotonic() - began
        catch_up = _CatchUp(ends)
        self._catching_up[partition] = catch_up
        self._reassign.set()
        try:
            await catch_up.done
        finally:
            if self._catching_up.get(partition) is catch_up:
                del self._catching_up[partition]
                self._reassign.set()
        return time.monotonic() - began

    def _caught_up(self, partition: int, ends: dict[TopicPartition, int]) -> bool:
        state, dedup = self._store.changelog_offsets(partition)
        return (state + 1 >= ends[TopicPartition(self.state_topic, partition)]
                and dedup + 1 >= ends[TopicPartition(self.dedup_topic, partition)])

    async def _check_local_copy(self, partition: int, ends: dict[TopicPartition, int]) -> None:
        """A local copy that is ahead of its changelog belongs to a topic that no longer
        exists (deleted and created again): drop it and read the changelog from scratch."""
        state, dedup = self._store.changelog_offsets(partition)
        if (state >= ends[TopicPartition(self.state_topic, partition)]
                or dedup >= ends[TopicPartition(self.dedup_topic, partition)]):
            log.warning("local state of partition %d is ahead of its changelog "
                        "(state %d, dedup %d, ends %s): reading it from scratch",
                        partition, state, dedup, ends)
            self._store.forget_partition(partition)

    async def _assign(self) -> None:
        partitions = self._standby | set(self._catching_up)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)
               for topic in (self.state_topic, self.dedup_topic)]
        consumer = self.consumer
        consumer.assign(tps)
        if not tps:
            return
        window_start = int((time.time() - self._settings.dedup_window_s) * 1000)
        firsts = await consumer.beginning_offsets(tps)
        for p in partitions:
            state, dedup = self._store.changelog_offsets(p)
            state_tp = TopicPartition(self.state_topic, p)
            dedup_tp = TopicPartition(self.dedup_topic, p)
            consumer.seek(state_tp, max(state + 1, firsts[state_tp]))
            if dedup >= 0:
                consumer.seek(dedup_tp, max(dedup + 1, firsts[dedup_tp]))
            else:  # nothing local yet: only the window's part of the dedup log matters
                found = await consumer.offsets_for_times({dedup_tp: window_start})
                start = found.get(dedup_tp)
                consumer.seek(dedup_tp, start.offset if start is not None
                              else (await consumer.end_offsets([dedup_tp]))[dedup_tp])

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                if self._reassign.is_set():
                    self._reassign.clear()
                    await self._assign()
                if not self.consumer.assignment():
                    await self._reassign.wait()
                    continue
                batches = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS,
                                                      max_records=MAX_RECORDS)
                if self._reassign.is_set():
                    continue  # positions change; what was fetched is read again
                self._apply(batches)
                await self._check_catch_ups()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except CLIENT_ERRORS as exc:
                log.warning("changelog follower: %r; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 5.0)
                self._reassign.set()

    def _apply(self, batches: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        window_start = int((time.time() - self._settings.dedup_window_s) * 1000)
        for tp, records in batches.items():
            state, dedup = self._store.changelog_offsets(tp.partition)
            if tp.topic == self.state_topic:
                fresh = [(r.offset, r.key, r.value) for r in records if r.offset > state]
                self._store.apply_state_log(tp.partition, fresh)
            else:
                fresh_dedup = [(r.offset, r.value) for r in records if r.offset > dedup]
                self._store.apply_dedup_log(tp.partition, fresh_dedup,
                                            not_before_ms=window_start)
            self.applied_records += len(records)

    async def _check_catch_ups(self) -> None:
        for catch_up in list(self._catching_up.values()):
            if catch_up.done.done():
                continue
            positions_reached = True
            for tp, end in catch_up.ends.items():
                if await self.consumer.position(tp) < end:
                    positions_reached = False
                    break
            if positions_reached:
                catch_up.done.set_result(None)
