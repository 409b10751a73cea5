"""Admission of new messages: past what the box sustains, the ingress answers at once
(503 `overloaded` with Retry-After) instead of queueing.

Three bounds:
- the pipeline's backlog in time: the age of the oldest record the sequencer or the
  inbox agent has not done (`BacklogProbe`, sampled in the background every
  `admission_probe_interval_s`). Kafka acks a produce long before the agents fall
  behind, so admission by the ack alone lets the backlog, and every accepted message's
  delivery time, grow without bound;
- this process's messages in flight, admitted and not yet answered
  (`ingress_max_in_flight`). By Little's law it bounds each one's answer time to about
  the bound over the rate this process answers at, whatever it waits for: a slow broker,
  Redis, or cores that every process on the box shares. The pipeline's backlog trips
  seconds after the box saturates; meanwhile every later answer waits longer and clients
  open more connections to keep their rate (a bound on the sends waiting for Kafka's
  ack alone let 5,000 requests wait in Redis and Kafka calls at once);
- this process's event loop running late (the process is too busy to start requests).
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter, Gauge

from app.errors import Overloaded, StoreUnavailable
from app.settings import Settings
from app.stores.kafka import BacklogProbe
from app.usecases.stats import agent_group, agent_topic

log = logging.getLogger(__name__)

# The agents whose backlog refuses new messages: those between a send and the recipient's
# devices (inbox and push). History falling behind (HBase down) must not stop the chat:
# the inbox still delivers, and history catches up from the log.
ADMITTING = ("sequencer", "inbox", "push")
LOOP_TICK_S = 0.05

BACKLOG = Gauge("imflow_ingress_backlog_seconds",
                "Age of the oldest record some agent has not done, as the ingress last saw it")
IN_FLIGHT = Gauge("imflow_ingress_in_flight",
                  "Messages this process admitted and has not answered yet")
LOOP_LAG = Gauge("imflow_web_loop_lag_seconds",
                 "How late this process's event loop ran a 50 ms timer (mean of 1 s)")
SHED = Counter("imflow_ingress_shed_total", "Messages refused as overload", ["reason"])


class Admission:
    def __init__(self, settings: Settings, probe: BacklogProbe | None) -> None:
        self._settings = settings
        self._probe = probe
        self._in_flight = 0
        self.backlog_s = 0.0
        self.loop_lag_s = 0.0
        self._shedding = False

    @classmethod
    def for_pipeline(cls, settings: Settings) -> Admission:
        groups = {agent_group(settings, a): agent_topic(settings, a) for a in ADMITTING}
        return cls(settings, BacklogProbe(settings, groups))

    def admitted(self) -> Admission:
        """One message's request from its admission to its answer (`with`); entering
        raises Overloaded at once when a new message should not be taken now. The gauge
        of messages in flight is set from the count as the loop watch ticks (a
        Prometheus gauge takes a lock per change)."""
        return self

    def __enter__(self) -> None:
        self._admit()
        self._in_flight += 1

    def __exit__(self, *_: object) -> None:
        self._in_flight -= 1

    def _admit(self) -> None:
        s = self._settings
        if self.backlog_s > s.admission_max_backlog_s:
            SHED.labels("backlog").inc()
            raise Overloaded(f"the pipeline is {self.backlog_s:.1f}s behind; retry later",
                             retry_after=1)
        if self.loop_lag_s > s.admission_max_loop_lag_s:
            SHED.labels("web_busy").inc()
            raise Overloaded(f"this web process is {1000 * self.loop_lag_s:.0f} ms behind; "
                             "retry later", retry_after=1)
        if self._in_flight >= s.ingress_max_in_flight:
            SHED.labels("in_flight").inc()
            raise Overloaded(f"this web process has {self._in_flight} messages in flight; "
                             "retry later", retry_after=1)

    async def watch(self) -> None:
        """Sample the backlog and this process's event-loop lag until cancelled. While
        Kafka does not answer, the last backlog stands (the produce itself then answers
        503)."""
        try:
            await asyncio.gather(self._watch_backlog(), self._watch_loop())
        finally:
            if self._probe is not None:
                await self._probe.stop()

    async def _watch_backlog(self) -> None:
        if self._probe is None:
            return
        failing = False
        while True:
            try:
                self.backlog_s = await self._probe.oldest_s()
                BACKLOG.set(self.backlog_s)
                failing = False
            except StoreUnavailable as exc:
                if not failing:
                    log.warning("backlog probe failed (admission keeps %.1fs): %s",
                                self.backlog_s, exc)
                failing = True
            self._note_state()
            await asyncio.sleep(self._settings.admission_probe_interval_s)

    async def _watch_loop(self) -> None:
        """A request this process is too busy to start waits in its event loop's queue,
        where no backlog probe sees it: the lateness of a short timer measures that wait.
        Its mean over the last second: a process descheduled once for a few hundred ms
        (two cores shared with every service) is not overloaded, one whose every tick is
        late is."""
        loop = asyncio.get_running_loop()
        recent: list[float] = []
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_TICK_S)
            late = loop.time() - before - LOOP_TICK_S
            recent = [*recent[-(int(1 / LOOP_TICK_S) - 1):], late]
            self.loop_lag_s = sum(recent) / len(recent)
            LOOP_LAG.set(self.loop_lag_s)
            IN_FLIGHT.set(self._in_flight)

    def _note_state(self) -> None:
        s = self._settings
        shedding = (self.backlog_s > s.admission_max_backlog_s
                    or self.loop_lag_s > s.admission_max_loop_lag_s)
        if shedding != self._shedding:
            self._shedding = shedding
            log.warning("admission %s: backlog %.2fs, loop lag %.0f ms",
                        "refusing new messages" if shedding else "open again",
                        self.backlog_s, 1000 * self.loop_lag_s)
