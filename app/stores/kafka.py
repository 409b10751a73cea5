"""The Kafka side of imflow: the ingress producer, topic creation and a health probe."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.errors import StoreUnavailable
from app.settings import Settings

log = logging.getLogger(__name__)


class InboundProducer:
    """Appends records to `imflow.inbound` with acks=all; a send either is acked or fails.

    Failing fast (within `produce_timeout_s`) lets the ingress answer 503 instead of
    hanging while Kafka is down; aiokafka reconnects by itself when Kafka is back.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        s = self._settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=1,
            request_timeout_ms=int(s.produce_timeout_s * 1000),
            client_id="imflow-web",
        )
        # Kafka may be down right now: start() must not keep the web from serving 503s.
        try:
            await asyncio.wait_for(self._producer.start(), timeout=30)
        except (KafkaError, TimeoutError) as exc:
            await self._producer.stop()
            raise StoreUnavailable(f"Kafka unreachable at {s.kafka_bootstrap}: {exc!r}") from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None:
        """Produce one record and wait for the broker's ack, or raise StoreUnavailable."""
        assert self._producer is not None, "producer not started"
        try:
            fut = await asyncio.wait_for(
                self._producer.send(topic, orjson.dumps(value), key=key.encode()),
                timeout=self._settings.produce_timeout_s,
            )
            await asyncio.wait_for(fut, timeout=self._settings.produce_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise StoreUnavailable(f"Kafka did not ack: {exc!r}") from exc

    async def ping(self) -> None:
        """Raise unless the broker answers a metadata request."""
        assert self._producer is not None
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=2)
        except (KafkaError, TimeoutError) as exc:
            raise StoreUnavailable(f"Kafka metadata: {exc!r}") from exc


async def ensure_topics(settings: Settings) -> list[str]:
    """Create imflow's topics if missing (idempotent); returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    retention_ms = str(settings.messages_retention_s * 1000)
    wanted = [
        NewTopic(settings.topic_inbound, settings.partitions, settings.replication_factor,
                 topic_configs={"retention.ms": retention_ms}),
        NewTopic(settings.topic_messages, settings.partitions, settings.replication_factor,
                 topic_configs={"retention.ms": retention_ms}),
        NewTopic(settings.topic_dead_letter, 1, settings.replication_factor,
                 topic_configs={"retention.ms": retention_ms}),
    ]
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created
