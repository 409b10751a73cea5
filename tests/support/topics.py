"""Kafka topics in tests: a new one, and reading a whole one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.settings import Settings
from app.stores.kafka import topic_partitions


@contextlib.asynccontextmanager
async def new_topic(settings: Settings, name: str) -> AsyncIterator[str]:
    """A topic of two partitions, deleted on exit."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2,
                                            replication_factor=settings.replication_factor)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def committed_values(settings: Settings, topic: str, *,
                           within_s: float = 120) -> AsyncIterator[bytes]:
    """The value of every committed record of `topic`, from each partition's beginning up
    to its end offset of now (a transactional writer's aborted or still open records are
    not read); fails if that takes longer than `within_s`."""
    tps = [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]
    # No group and "earliest": each partition starts at its beginning (seek_to_beginning
    # right after assign raced with the default "latest" reset and started at the end).
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        deadline = time.monotonic() + within_s
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} up to {end}"
            for tp, batch in (await consumer.getmany(*tps, timeout_ms=1000)).items():
                for record in batch:
                    if record.offset < end[tp] and record.value is not None:
                        yield record.value
    finally:
        await consumer.stop()
