"""A full dedup window for the sequencer: records produced straight to `imflow.inbound`
(as an outside producer may), and what a day's window costs: RSS, disk, restart time."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from app.models import direct_conversation, encode_send, now_ms
from app.settings import Settings
from app.stores.kafka import end_offsets, key_partitioner, topic_partitions

BATCH_BYTES = 900_000  # under Kafka's 1 MiB record batch limit


async def fill_inbound(settings: Settings, count: int, *, tag: str,
                       conversations: int = 10_000) -> dict[int, int]:
    """Produce `count` distinct messages over `conversations` one-to-one chats to the
    inbound topic, as fast as one producer can (whole record batches per partition);
    returns the end offset of every partition afterwards."""
    topic = settings.topic_inbound
    partitions = sorted(await topic_partitions(settings, topic))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                max_request_size=2 << 20, linger_ms=5)
    await producer.start()
    try:
        batches: dict[int, Any] = {}  # partition -> aiokafka BatchBuilder
        pending: list[asyncio.Future[Any]] = []
        accepted_at = now_ms()
        for i in range(count):
            pair = i % conversations
            a, b = f"wa{pair}-{tag}", f"wb{pair}-{tag}"
            cid = direct_conversation(a, b)
            key = cid.encode()
            value = encode_send(cid, a, f"w{i}", body_json=str(i).encode(),
                                accepted_at=accepted_at)
            p = key_partitioner(key, partitions, partitions)
            batch = batches.get(p)
            if batch is None:
                batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for p, batch in batches.items():
            pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return await end_offsets(settings, topic)


async def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """A consumer group's committed offsets on a topic (-1: none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        result: dict[int, int] = defaultdict(lambda: -1)
        for p in await topic_partitions(settings, topic):
            offset = await consumer.committed(TopicPartition(topic, p))
            result[p] = -1 if offset is None else offset
        return dict(result)
    finally:
        await consumer.stop()


async def skip_to_end(settings: Settings, group: str, topic: str) -> None:
    """Commit a consumer group's offsets at the topic's end, as an operator does to start
    a sink on new records only (here: not to write a million test messages to Redis and
    HBase, which the window test does not measure)."""
    ends = await end_offsets(settings, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = {TopicPartition(topic, p): OffsetAndMetadata(o, "") for p, o in ends.items()}
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def seconds_since(start: float) -> float:
    return round(time.monotonic() - start, 2)
