"""librdkafka's producer (confluent-kafka) seen from an event loop: the ingress's Kafka client.

librdkafka builds, sends and retries produce requests in its own C threads; handing it a
record costs the event loop one call. aiokafka does all of that in Python on the loop
that also serves HTTP: 100-110 CPU-us per round of the ingress, against 26-32 here
(measured on this box, rounds of about 32 messages). One thread of ours serves the
delivery reports (`poll`, which waits without the GIL) and hands each poll's reports to
the loop in one call.

Only the web's ingress uses it. The sequencer's transactions stay on aiokafka, inside
Faust's loop (`TransactionalWriter`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from app.settings import Settings

log = logging.getLogger(__name__)
POLL_S = 0.05  # how long the delivery thread waits in one poll; also its stop latency
METADATA_RETRY_S = 0.05
NOT_YET_KNOWN = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.LEADER_NOT_AVAILABLE)

Report = tuple["asyncio.Future[None]", KafkaError | None]


class AckingProducer:
    """`send` hands one record over and returns a future its delivery report settles:
    done once every in-sync replica has it (acks=all, idempotent), or failed with a
    KafkaException, at the latest after `message_timeout_s`."""

    def __init__(self, bootstrap: str, *, message_timeout_s: float, client_id: str) -> None:
        self._loop = asyncio.get_running_loop()
        self.fatal: KafkaError | None = None  # set once librdkafka gave the producer up
        timeout_ms = max(1, int(message_timeout_s * 1000))
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,  # the caller batches already (the ingress's rounds)
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": timeout_ms,
            "socket.nagle.disable": True,
            "reconnect.backoff.max.ms": 1000,  # a restarted broker is found again within 1 s
            "allow.auto.create.topics": False,  # `imflow init` creates the topics
            "error_cb": self._on_error,
            "logger": log,
        })
        self._reports: list[Report] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve_reports, daemon=True,
                                        name="imflow-kafka-reports")
        self._thread.start()

    @classmethod
    def for_ingress(cls, settings: Settings) -> AckingProducer:
        return cls(settings.kafka_bootstrap, message_timeout_s=settings.produce_timeout_s,
                   client_id="imflow-web")

    def send(self, topic: str, partition: int, key: bytes | None,
             value: bytes) -> asyncio.Future[None]:
        """Hand a record over (raises KafkaException or BufferError if it cannot be)."""
        if self.fatal is not None:
            raise KafkaException(self.fatal)
        acked: asyncio.Future[None] = self._loop.create_future()

        def delivered(err: KafkaError | None, _: Any) -> None:  # in a `poll`
            self._reports.append((acked, err))

        self._producer.produce(topic, value, key, partition, on_delivery=delivered)
        return acked

    async def partitions(self, topic: str, timeout_s: float) -> list[int]:
        """The topic's partitions. A broker may not know a topic created a moment ago (its
        metadata spreads from the controller; aiokafka waited for it too): until
        `timeout_s`, an unknown topic is asked for again."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.01, deadline - time.monotonic())
            metadata = await asyncio.to_thread(self._producer.list_topics, topic, left)
            described = metadata.topics[topic]
            if described.error is None:
                return sorted(described.partitions)
            if (described.error.code() not in NOT_YET_KNOWN
                    or time.monotonic() + METADATA_RETRY_S > deadline):
                raise KafkaException(described.error)
            await asyncio.sleep(METADATA_RETRY_S)

    async def check(self, timeout_s: float) -> None:
        """Raise KafkaException unless a broker answers a metadata request in time."""
        await asyncio.to_thread(self._producer.list_topics, None, timeout_s)

    async def close(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the records handed over, then let the producer go."""
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self._producer.flush, timeout_s)  # serves their reports
        self._producer.purge()
        await asyncio.to_thread(self._producer.poll, 0)  # the purged ones' reports
        _settle(self._reports)
        self._reports = []
        await asyncio.to_thread(self._producer.close)

    def _serve_reports(self) -> None:
        while not self._stopping.is_set():
            try:
                self._producer.poll(POLL_S)  # runs `delivered` for each report it serves
            except Exception:  # a callback's failure must not end the reports for good
                log.exception("serving Kafka delivery reports")
            if self._reports:  # filled and swapped on this thread only, until `close`
                reports = self._reports
                self._reports = []
                try:
                    self._loop.call_soon_threadsafe(_settle, reports)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _on_error(self, err: KafkaError) -> None:  # on the reports thread
        if err.fatal():
            self.fatal = err
            log.error("Kafka producer failed for good: %s", err)
        elif err.code() != KafkaError._ALL_BROKERS_DOWN:
            log.debug("Kafka producer: %s", err)


def _settle(reports: list[Report]) -> None:
    for acked, err in reports:
        if acked.done():  # its caller was cancelled
            continue
        if err is None:
            acked.set_result(None)
        else:
            acked.set_exception(KafkaException(err))
