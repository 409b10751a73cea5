"""The ingress's rounds on the real Kafka: a round that is full does not wait out the
linger, and one that is not full does. The linger here is ten minutes, so only the round
being full can send a record within the produce timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from app.devstack import local_settings
from app.errors import StoreUnavailable
from app.settings import Settings
from app.stores.kafka import InboundProducer
from tests.support.topics import committed_values

pytestmark = pytest.mark.services
LINGER_MS = 600_000
FULL = 4


@pytest.fixture
def settings() -> Settings:
    return local_settings(redis_db=9, ingress_batch_linger_ms=LINGER_MS,
                          ingress_round_full_records=FULL, produce_timeout_s=2.0)


@pytest_asyncio.fixture
async def producer(settings: Settings) -> AsyncIterator[InboundProducer]:
    producer = InboundProducer(settings)
    yield producer
    await producer.stop()


async def messages_in(settings: Settings, topic: str) -> list[int]:
    """The `n` of every message in the topic, batch records unpacked."""
    found: list[int] = []
    async for raw in committed_values(settings, topic):
        value = orjson.loads(raw)
        found.extend(item["n"] for item in value.get("records", [value]))
    return sorted(found)


def message(n: int) -> bytes:
    return orjson.dumps({"n": n})


async def test_a_full_round_goes_out_at_once(settings: Settings, topic: str,
                                             producer: InboundProducer) -> None:
    await producer.send(topic, "c0", message(0))  # the topic was idle: sent at once
    # The next round would wait out the ten-minute linger; it fills, so it goes now.
    await asyncio.gather(*(producer.send(topic, f"c{n}", message(n))
                           for n in range(1, FULL + 1)))
    assert await messages_in(settings, topic) == list(range(FULL + 1))


async def test_a_round_that_is_not_full_waits_out_the_linger(
        settings: Settings, topic: str, producer: InboundProducer) -> None:
    await producer.send(topic, "c0", message(0))
    waiting = [producer.send(topic, f"c{n}", message(n)) for n in range(1, FULL)]
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert await messages_in(settings, topic) == [0]
