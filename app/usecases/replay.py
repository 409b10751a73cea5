"""`imflow replay`: re-apply a range of `imflow.messages` to chosen sinks.

Every sink is idempotent (inbox by per-conversation seq, history by row key), so a replay
can run while the agents run, and can rebuild a wiped Redis or HBase from the topic.
Push is not idempotent for clients: replaying it re-sends to online devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.models import SequencedRecord, parse_sequenced_items
from app.settings import Settings
from app.stores.history import HistoryStore
from app.stores.kafka import topic_partitions
from app.stores.redis_client import create_redis
from app.usecases.sinks import SINKS, Applied


@dataclass
class ReplayRange:
    partitions: Sequence[int] | None = None  # None: all
    from_offset: int | None = None
    from_index: int | None = None  # within the batch record at from_offset: start there
    to_offset: int | None = None  # exclusive
    from_ms: int | None = None
    to_ms: int | None = None  # exclusive


@dataclass
class ReplaySummary:
    records: int = 0  # Kafka records read (a batch record carries many messages)
    read: int = 0  # messages read
    malformed: int = 0
    applied: dict[str, Applied] = field(default_factory=dict)  # per sink, summed
    per_partition: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, sink: str, applied: Applied) -> None:
        before = self.applied.get(sink, Applied(0, 0))
        self.applied[sink] = Applied(before.expected + applied.expected,
                                     before.written + applied.written)

    @property
    def inbox_deliveries(self) -> int:
        """Inbox entries plus large-group feed entries the records asked for."""
        return self.applied.get("inbox", Applied(0, 0)).expected

    @property
    def inbox_written(self) -> int:
        return self.applied.get("inbox", Applied(0, 0)).written

    @property
    def history_rows(self) -> int:
        return self.applied.get("history", Applied(0, 0)).written

    @property
    def pushed(self) -> int:
        return self.applied.get("push", Applied(0, 0)).written

    @property
    def inbox_skipped(self) -> int:
        """Deliveries the inbox already held (duplicates skipped)."""
        return self.inbox_deliveries - self.inbox_written


async def _bounds(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                  rng: ReplayRange) -> dict[TopicPartition, tuple[int, int]]:
    """[start, end) offsets per partition; `end` is fixed now, so the replay terminates."""
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    starts = dict(begin)
    ends = dict(end)
    if rng.from_ms is not None:
        found = await consumer.offsets_for_times({tp: rng.from_ms for tp in tps})
        starts = {tp: (found[tp].offset if found[tp] else end[tp]) for tp in tps}
    if rng.to_ms is not None:
        found = await consumer.offsets_for_times({tp: rng.to_ms for tp in tps})
        ends = {tp: (found[tp].offset if found[tp] else end[tp]) for tp in tps}
    if rng.from_offset is not None:
        starts = {tp: max(begin[tp], rng.from_offset) for tp in tps}
    if rng.to_offset is not None:
        ends = {tp: min(end[tp], rng.to_offset) for tp in tps}
    return {tp: (starts[tp], max(starts[tp], ends[tp])) for tp in tps}


async def replay(settings: Settings, sinks: Iterable[str], rng: ReplayRange, *,
                 batch: int = 500, show_progress: bool = True) -> ReplaySummary:
    chosen = set(sinks)
    unknown = chosen - set(SINKS)
    if unknown or not chosen:
        raise ValueError(f"sinks must be some of {', '.join(SINKS)}; got {sorted(chosen)}")
    summary = ReplaySummary()
    redis = create_redis(settings)
    uses = {SINKS[name].uses for name in chosen}
    history = HistoryStore(settings) if "hbase" in uses else None
    clients = {"redis": redis, "hbase": history}
    # in registry order: the inbox (with the group projection) before push
    applies = {name: sink.make(settings, clients[sink.uses])
               for name, sink in SINKS.items() if name in chosen}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, max_poll_records=batch,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        available = await topic_partitions(settings, settings.topic_messages)
        wanted = sorted(available if rng.partitions is None else set(rng.partitions) & available)
        tps = [TopicPartition(settings.topic_messages, p) for p in wanted]
        bounds = await _bounds(consumer, tps, rng)
        todo = {tp: b for tp, b in bounds.items() if b[1] > b[0]}
        summary.per_partition = {tp.partition: b for tp, b in bounds.items()}
        total = sum(end - start for start, end in todo.values())
        if todo:
            consumer.assign(list(todo))
            for tp, (start, _) in todo.items():
                consumer.seek(tp, start)
        with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), disable=not show_progress) as progress:
            task = progress.add_task("records", total=total)
            while todo:
                fetched = await consumer.getmany(*todo, timeout_ms=1000, max_records=batch)
                records: list[SequencedRecord] = []
                for tp, messages in fetched.items():
                    end = todo[tp][1]
                    for message in messages:
                        if message.offset >= end:
                            break
                        summary.records += 1
                        first = (rng.from_index or 0) if message.offset == rng.from_offset else 0
                        for item in parse_sequenced_items(message.value):
                            if item.index is not None and item.index < first:
                                continue  # before the (offset, index) the range starts at
                            summary.read += 1
                            if item.record is None:
                                summary.malformed += 1
                            else:
                                records.append(item.record)
                # Interleave partitions by time; stable, so each conversation keeps its seq
                # order (its ts never goes backwards).
                records.sort(key=lambda r: r.message.ts)
                for name, apply in applies.items():
                    if records:
                        summary.add(name, await apply(records))
                progress.update(task, completed=summary.records)
                for tp in list(todo):  # done once the next offset to read is the end
                    if await consumer.position(tp) >= todo[tp][1]:
                        consumer.pause(tp)
                        del todo[tp]
    finally:
        await consumer.stop()
        if history is not None:
            await history.close()
        await redis.aclose()
    return summary
