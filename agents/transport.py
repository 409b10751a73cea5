"""Faust's aiokafka transport, with the consumer's fetch wait taken from settings and
committed reads only.

Faust builds its worker consumer with `fetch_max_wait_ms=1500`, a fixed value. Measured
here (bench/breakdown.py, 400 msg/s): agents then fell ~1.5 s behind now and then and
stayed there, which put the sequencer's or the inbox agent's p50 at 1.3 s; with 100 ms
the same run gives 30-40 ms.

Faust reads `read_committed` only in its own exactly-once mode, which imflow does not
use; but the sequencer writes `imflow.messages` in Kafka transactions (a fenced or
aborted one must never reach a sink), and an outside producer may write
`imflow.inbound` transactionally. So every agent reads committed records only.

aiokafka passes both values to its fetcher when the consumer starts, so they are set on
the consumer Faust created, before it starts.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport


class ShortFetchConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        consumer._isolation_level = "read_committed"
        return consumer


class ShortFetchConsumer(Consumer):
    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ShortFetchTransport(Transport):
    """Install with `app.transport = ShortFetchTransport(app.conf.broker_consumer, app,
    fetch_max_wait_ms=...)` right after creating the app."""

    Consumer = ShortFetchConsumer

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
