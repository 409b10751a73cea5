"""The ingress's librdkafka producer (`AckingProducer`) on the real Kafka, and against a
port nothing listens on: every record handed over is settled, acked or failed, within
the message timeout; closing settles what is still waiting; a producer that never
connected does not outlive the send that tried it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from app.devstack import free_port, local_settings
from app.errors import StoreUnavailable
from app.settings import Settings
from app.stores.kafka import InboundProducer
from app.stores.librdkafka import AckingProducer
from tests.support.topics import committed_values, new_topic

pytestmark = pytest.mark.services
TIMEOUT_S = 1.0


@pytest.fixture
def settings() -> Settings:
    return local_settings(redis_db=9)


def nothing_listening() -> str:
    return f"127.0.0.1:{free_port()}"


async def test_acked_records_are_in_the_topic(settings: Settings, topic: str) -> None:
    producer = AckingProducer(settings.kafka_bootstrap, message_timeout_s=5, client_id="t")
    try:
        assert await producer.partitions(topic, 5) == [0, 1]
        await asyncio.gather(*(producer.send(topic, n % 2, b"k", b"v%d" % n)
                               for n in range(50)))
    finally:
        await producer.close(5)
    found = sorted([v async for v in committed_values(settings, topic)])
    assert found == sorted(b"v%d" % n for n in range(50))


async def test_a_topic_created_while_asked_for_is_found(settings: Settings,
                                                        topic: str) -> None:
    """A broker may not know a topic created a moment ago: it is asked again until the
    timeout (an unknown one fails only then), so a topic that appears meanwhile is found."""
    producer = AckingProducer(settings.kafka_bootstrap, message_timeout_s=5, client_id="t")
    try:
        started = time.monotonic()
        with pytest.raises(KafkaException):
            await producer.partitions(f"{topic}-never-created", 0.5)
        assert time.monotonic() - started >= 0.45  # asked again, not failed at once
        asking = asyncio.create_task(producer.partitions(f"{topic}-later", 30))
        async with new_topic(settings, f"{topic}-later"):
            assert await asking == [0, 1]
    finally:
        await producer.close(5)


async def test_without_a_broker_a_record_fails_within_the_timeout() -> None:
    producer = AckingProducer(nothing_listening(), message_timeout_s=TIMEOUT_S,
                              client_id="t")
    try:
        with pytest.raises(KafkaException):
            await producer.check(0.5)
        acked = producer.send("any", 0, None, b"v")
        with pytest.raises(KafkaException) as failed:
            await asyncio.wait_for(acked, TIMEOUT_S + 2)
        assert failed.value.args[0].code() == KafkaError._MSG_TIMED_OUT
    finally:
        await producer.close(0)


async def test_closing_fails_what_was_not_acked() -> None:
    producer = AckingProducer(nothing_listening(), message_timeout_s=60, client_id="t")
    acked = producer.send("any", 0, None, b"v")
    await producer.close(0)
    assert acked.done()
    with pytest.raises(KafkaException):
        acked.result()


async def test_producers_that_never_connected_are_closed() -> None:
    """Without Kafka, each send (no outage probe interval here) tries a new producer and
    its deadline cuts the try short; none of their threads is left once stopped."""
    settings = local_settings(redis_db=9, kafka_bootstrap=nothing_listening(),
                              produce_timeout_s=0.5, ingress_outage_probe_s=0)
    ingress = InboundProducer(settings)
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await ingress.send("any", "u:a:b", b"{}")
    await ingress.stop()
    assert [t for t in threading.enumerate() if t.name == "imflow-kafka-reports"] == []
