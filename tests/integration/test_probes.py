"""The probes that sample Kafka for the ingress's admission and the agents' lag gauges,
on the real Kafka. Their consumers live as long as the process, so between samples they
must fetch nothing, and sampling again must not swap the assignment each time."""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.devstack import local_settings
from app.settings import Settings
from app.stores.kafka import BacklogProbe, probing

pytestmark = pytest.mark.services
AGE_S = 30


@pytest.fixture
def settings() -> Settings:
    return local_settings(redis_db=9)


async def produce(settings: Settings, topic: str, partition: int, timestamps_ms: list[int]
                  ) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for ts in timestamps_ms:
            await producer.send_and_wait(topic, b"x", partition=partition, timestamp_ms=ts)
    finally:
        await producer.stop()


async def commit(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_the_backlog_is_the_age_of_the_oldest_record_a_group_has_not_done(
        settings: Settings, topic: str) -> None:
    now_ms = int(time.time() * 1000)
    await produce(settings, topic, 0, [now_ms - 90_000, now_ms - AGE_S * 1000, now_ms])
    await produce(settings, topic, 1, [now_ms - 5_000])
    group = f"imflowtest-probes-{uuid.uuid4().hex[:8]}"
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await commit(settings, group, {p0: 1, p1: 1})  # partition 1 is done
    probe = BacklogProbe(settings, {group: topic})
    try:
        assert AGE_S <= await probe.oldest_s() < AGE_S + 10
        await commit(settings, group, {p0: 3})
        assert await probe.oldest_s() == 0.0
    finally:
        await probe.stop()


async def test_a_probe_fetches_only_inside_its_block_and_keeps_its_assignment(
        settings: Settings, topic: str) -> None:
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await produce(settings, topic, 0, [int(time.time() * 1000)])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        with probing(consumer, {p0}):
            assert consumer.paused() == set()
            consumer.seek(p0, 0)
            fetched = await consumer.getmany(p0, timeout_ms=5000)
            assert [r.offset for r in fetched[p0]] == [0]
        assert consumer.paused() == {p0}
        with probing(consumer, {p1}):
            assert consumer.assignment() == {p0, p1}  # added to, not swapped
            assert consumer.paused() == {p0}
        assert consumer.paused() == {p0, p1}
        consumer.seek(p0, 0)
        assert await consumer.getmany(timeout_ms=300) == {}  # paused: nothing is fetched
    finally:
        await consumer.stop()
