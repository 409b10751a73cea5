"""Prometheus metrics of the agents, served by each agent process on its own port.

Every metric carries the agent's name (`agent` label), so one scrape config can collect
every process. `MetricsService` (a dependency of every agent app, see agents/base.py)
serves them with prometheus_client's HTTP server on `IMFLOW_AGENT_METRICS_PORT` (default:
9101 sequencer, 9102 inbox, 9103 history, 9104 push; 0 turns it off; a second process of
the same agent needs a port of its own) and refreshes the consumer-lag gauges every
`IMFLOW_AGENT_LAG_INTERVAL_S` seconds from the group's committed offsets (app/usecases/stats.py, as
`imflow stats` shows them). The README lists every metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import mode
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from app.settings import Settings

if TYPE_CHECKING:
    from app.usecases.stats import PartitionStats

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"sequencer": 9101, "inbox": 9102, "history": 9103, "push": 9104}
# the store each agent's batches go to (label `store` of imflow_agent_batch_seconds)
STORES = {"sequencer": "kafka", "inbox": "redis", "history": "hbase", "push": "redis"}

RECORDS = Counter("imflow_agent_records_total",
                  "Kafka records consumed (malformed ones included)", ["agent"])
MESSAGES = Counter("imflow_agent_messages_total",
                   "Messages applied to the agent's store (the sequencer: sequenced and "
                   "written to imflow.messages)", ["agent"])
BATCH_RECORDS = Histogram("imflow_agent_batch_records", "Records per batch", ["agent"],
                          buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
BATCH_SECONDS = Histogram(
    "imflow_agent_batch_seconds", "Time to apply one batch to the store, retries included",
    ["agent", "store"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
RETRIES = Counter("imflow_agent_retries_total",
                  "Failed store writes or Kafka transactions that were retried",
                  ["agent", "what"])
DEAD_LETTERS = Counter("imflow_agent_dead_letters_total",
                       "Records written to the dead-letter topic", ["agent"])
LAG = Gauge("imflow_agent_consumer_lag",
            "Offsets between the group's committed offset and the partition's end "
            "(0 when only transaction markers are left)", ["agent", "topic", "partition"])
COMMITTED = Gauge("imflow_agent_committed_offset", "The group's committed offset",
                  ["agent", "topic", "partition"])
END = Gauge("imflow_agent_end_offset", "The partition's end (last stable) offset",
            ["agent", "topic", "partition"])
LAG_UPDATED = Gauge("imflow_agent_lag_updated_timestamp_seconds",
                    "When the lag gauges were last refreshed", ["agent"])


def metrics_port(settings: Settings, agent: str) -> int:
    if settings.agent_metrics_port is not None:
        return settings.agent_metrics_port
    return DEFAULT_PORTS.get(agent, 0)


def show_lag(agent: str, rows: Iterable[PartitionStats]) -> None:
    for row in rows:
        labels = (agent, row.topic, str(row.partition))
        LAG.labels(*labels).set(row.lag)
        END.labels(*labels).set(row.end)
        if row.committed is not None:
            COMMITTED.labels(*labels).set(row.committed)
    LAG_UPDATED.labels(agent).set_to_current_time()


class MetricsService(mode.Service):
    """Serves /metrics of this agent process and keeps its lag gauges fresh."""

    def __init__(self, settings: Settings, agent: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.agent = agent
        self._lag_task: asyncio.Task[None] | None = None
        self._server: Any = None

    async def on_start(self) -> None:
        port = metrics_port(self.settings, self.agent)
        if not port:
            return
        try:
            self._server, _ = start_http_server(port, addr=self.settings.host)
        except OSError as exc:  # never let metrics stop an agent
            log.warning("no metrics for %s: port %d: %s (set IMFLOW_AGENT_METRICS_PORT)",
                        self.agent, port, exc)
            return
        log.info("metrics of %s on http://%s:%d/metrics", self.agent, self.settings.host, port)
        self._lag_task = asyncio.create_task(self._lag_loop(), name="imflow-lag-metrics")

    async def on_stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self._server is not None:
            self._server.shutdown()

    async def _lag_loop(self) -> None:
        from app.usecases.stats import LagProbe

        probe: LagProbe | None = None
        try:
            while True:
                try:
                    if probe is None:
                        fresh = LagProbe(self.settings)
                        await fresh.start()  # when it fails, it closes what it opened
                        probe = fresh
                    show_lag(self.agent, await probe.collect(interval_s=0.0,
                                                             agents=[self.agent]))
                except Exception as exc:  # Kafka away or topics not there yet: try again
                    log.info("lag metrics of %s not refreshed: %r", self.agent, exc)
                await asyncio.sleep(self.settings.agent_lag_interval_s)
        finally:
            if probe is not None:
                with contextlib.suppress(Exception):
                    await probe.stop()
