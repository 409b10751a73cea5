"""`imflow stats`: how far each agent's consumer group is behind, per partition.

For every agent (= consumer group `<prefix>-<agent>`) and every partition of the topic it
reads: the committed offset, the end offset a `read_committed` reader can reach (the last
stable offset: the sequencer writes `imflow.messages` in transactions), the lag between
them, and the rate at which the committed offset moved over a short sampling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.settings import Settings
from app.stores.kafka import described_partitions, probing
from app.usecases.sinks import SINKS

AGENTS = ("sequencer", *SINKS)  # every agent (app/usecases/sinks.py)
# A gap this small between committed and end may be transaction markers only (one per
# sequencer transaction), which no read_committed reader consumes: such a gap is probed.
MARKER_PROBE_MAX = 64


def agent_topic(settings: Settings, agent: str) -> str:
    return settings.topic_inbound if agent == "sequencer" else settings.topic_messages


def agent_group(settings: Settings, agent: str) -> str:
    return f"{settings.app_prefix}-{agent}"


@dataclass(frozen=True)
class PartitionStats:
    agent: str
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int
    lag: int  # offsets from the committed one (or the log start) to the end; 0 when all
    #           that is left are transaction markers or aborted records (nothing to consume)
    rate: float  # committed offsets per second over the sampling interval

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def _committed(admin: AIOKafkaAdminClient, group: str,
                     tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
    offsets = await admin.list_consumer_group_offsets(group, partitions=list(tps))
    return {tp: (meta.offset if meta.offset >= 0 else None) for tp, meta in offsets.items()}


async def _consumable(consumer: AIOKafkaConsumer,
                      gaps: dict[TopicPartition, tuple[int, int]]) -> set[TopicPartition]:
    """The partitions whose [position, end) holds a record a read_committed reader gets;
    the others hold only transaction markers or aborted records."""
    if not gaps:
        return set()
    with probing(consumer, set(gaps)):
        for tp, (position, _) in gaps.items():
            consumer.seek(tp, position)
        found: set[TopicPartition] = set()
        pending = set(gaps)
        for _ in range(5):
            batch = await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            found |= {tp for tp, records in batch.items() if records}
            pending = {tp for tp in pending - found
                       if await consumer.position(tp) < gaps[tp][1]}
            if not pending:
                break
    return found | pending  # unresolved: count it as lag rather than hide it


class LagProbe:
    """The Kafka clients that sample lag, open from `start` to `stop`: an agent samples its
    own every few seconds, and new clients each time would mean new connections to every
    broker (and a page of aiokafka's logs) each time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                          enable_auto_commit=False,
                                          isolation_level="read_committed")

    async def start(self) -> None:
        """Connect both clients; on failure (Kafka away) close what did connect."""
        try:
            await self._admin.start()
            await self._consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def collect(self, *, interval_s: float = 1.0,
                      agents: Iterable[str] = AGENTS) -> list[PartitionStats]:
        """Sample every group's committed offsets twice, `interval_s` apart; end offsets
        after."""
        settings, admin, consumer = self._settings, self._admin, self._consumer
        wanted = list(agents)
        tps = {topic: [TopicPartition(topic, p)
                       for p in sorted(await described_partitions(admin, topic))]
               for topic in {agent_topic(settings, a) for a in wanted}}

        async def sample() -> dict[str, dict[TopicPartition, int | None]]:
            groups = [agent_group(settings, a) for a in wanted]
            results = await asyncio.gather(*(
                _committed(admin, g, tps[agent_topic(settings, a)])
                for a, g in zip(wanted, groups, strict=True)))
            return dict(zip(wanted, results, strict=True))

        first, started = await sample(), time.monotonic()
        await asyncio.sleep(interval_s)
        second, elapsed = await sample(), time.monotonic() - started
        every = [tp for parts in tps.values() for tp in parts]
        ends = await consumer.end_offsets(every)
        starts = await consumer.beginning_offsets(every)
        positions = {(agent, tp): (second[agent].get(tp) or starts[tp])
                     for agent in wanted for tp in tps[agent_topic(settings, agent)]}
        small = {key: (at, ends[key[1]]) for key, at in positions.items()
                 if 0 < ends[key[1]] - at <= MARKER_PROBE_MAX}
        consumable: set[tuple[str, TopicPartition]] = set()
        for agent in wanted:  # one probe per agent: agents may be at different offsets
            mine = {tp: gap for (a, tp), gap in small.items() if a == agent}
            consumable |= {(agent, tp) for tp in await _consumable(consumer, mine)}
        rows = []
        for agent in wanted:
            for tp in tps[agent_topic(settings, agent)]:
                before, now = first[agent].get(tp), second[agent].get(tp)
                gap = max(0, ends[tp] - positions[(agent, tp)])
                if (agent, tp) in small and (agent, tp) not in consumable:
                    gap = 0
                moved = (now or 0) - (before if before is not None else (now or 0))
                rows.append(PartitionStats(
                    agent=agent, group=agent_group(settings, agent), topic=tp.topic,
                    partition=tp.partition, committed=now, end=ends[tp], lag=gap,
                    rate=round(moved / elapsed, 1)))
        return rows


async def collect(settings: Settings, *, interval_s: float = 1.0,
                  agents: Iterable[str] = AGENTS) -> list[PartitionStats]:
    """One sample with clients of its own (`imflow stats`)."""
    probe = LagProbe(settings)
    await probe.start()
    try:
        return await probe.collect(interval_s=interval_s, agents=agents)
    finally:
        await probe.stop()


def totals(rows: Iterable[PartitionStats]) -> dict[str, dict[str, float]]:
    """Per agent: the sum of lag and rate over its partitions."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        agg = out.setdefault(row.agent, {"lag": 0, "rate": 0.0})
        agg["lag"] += row.lag
        agg["rate"] = round(agg["rate"] + row.rate, 1)
    return out
