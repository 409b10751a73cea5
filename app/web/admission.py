"""Admission of new messages: past what the box sustains, the ingress answers at once
(503 `overloaded` with Retry-After) instead of queueing.

Two bounds:
- the pipeline's backlog in time: the age of the oldest record the sequencer or the
  inbox agent has not done (`BacklogProbe`, sampled in the background every
  `admission_probe_interval_s`). Kafka acks a produce long before the agents fall
  behind, so admission by the ack alone lets the backlog, and every accepted message's
  delivery time, grow without bound;
- this process's sends waiting for Kafka's ack (`ingress_max_pending`), so a slow broker
  cannot pile requests up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import Counter, Gauge

from app.errors import Overloaded, StoreUnavailable
from app.settings import Settings
from app.stores.kafka import BacklogProbe
from app.usecases.stats import agent_group, agent_topic

log = logging.getLogger(__name__)

# The agents whose backlog refuses new messages: those between a send and the recipient's
# inbox. History and push falling behind (HBase down, a slow push) must not stop the
# chat: the inbox still delivers, and history catches up from the log.
ADMITTING = ("sequencer", "inbox")

BACKLOG = Gauge("imflow_ingress_backlog_seconds",
                "Age of the oldest record some agent has not done, as the ingress last saw it")
PENDING = Gauge("imflow_ingress_pending", "Sends of this process waiting for Kafka's ack")
SHED = Counter("imflow_ingress_shed_total", "Messages refused as overload", ["reason"])


class Admission:
    def __init__(self, settings: Settings, probe: BacklogProbe | None) -> None:
        self._settings = settings
        self._probe = probe
        self._pending = 0
        self.backlog_s = 0.0

    @classmethod
    def for_pipeline(cls, settings: Settings) -> Admission:
        groups = {agent_group(settings, a): agent_topic(settings, a) for a in ADMITTING}
        return cls(settings, BacklogProbe(settings, groups))

    def admit(self) -> None:
        """Raise Overloaded when a new message should not be taken now."""
        s = self._settings
        if self.backlog_s > s.admission_max_backlog_s:
            SHED.labels("backlog").inc()
            raise Overloaded(f"the pipeline is {self.backlog_s:.1f}s behind; retry later",
                             retry_after=1)
        if self._pending >= s.ingress_max_pending:
            SHED.labels("pending").inc()
            raise Overloaded("too many messages waiting for the queue's ack; retry later",
                             retry_after=1)

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        self._pending += 1
        PENDING.inc()
        try:
            yield
        finally:
            self._pending -= 1
            PENDING.dec()

    async def watch(self) -> None:
        """Sample the backlog until cancelled; while Kafka does not answer, the last value
        stands (the produce itself then answers 503)."""
        if self._probe is None:
            return
        try:
            while True:
                try:
                    self.backlog_s = await self._probe.oldest_s()
                    BACKLOG.set(self.backlog_s)
                except StoreUnavailable as exc:
                    log.debug("backlog probe failed: %s", exc)
                await asyncio.sleep(self._settings.admission_probe_interval_s)
        finally:
            await self._probe.stop()
