"""Faust's aiokafka transport, with the consumer's fetch wait taken from settings.

Faust builds its worker consumer with `fetch_max_wait_ms=1500`, a fixed value. Measured
here (bench/breakdown.py, 400 msg/s): agents then fell ~1.5 s behind now and then and
stayed there, which put the sequencer's or the inbox agent's p50 at 1.3 s; with 100 ms
the same run gives 30-40 ms. aiokafka passes the value to its fetcher when the consumer
starts, so it is set on the consumer Faust created, before it starts.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport


class ShortFetchConsumerThread(AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
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
