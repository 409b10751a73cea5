"""Every HTTP request counted by route and status, and timed by route, in plain ints.

The same series a prometheus_client Counter and Histogram would give
(`imflow_http_requests_total`, `imflow_http_request_seconds`), built only when
/metrics is read. prometheus_client takes a lock per `inc` and per `observe`: two of
them per request were 5% of the ingress's CPU. Everything here runs on the web
process's event loop, so plain counters are safe.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class RequestMetrics(Collector):
    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self._bounds = buckets
        self._requests: dict[tuple[str, int], int] = {}
        # route -> per-bucket counts (the last one: above every bound), and the seconds' sum
        self._latency: dict[str, list[int]] = {}
        self._seconds: dict[str, float] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        counts = self._latency.get(route)
        if counts is None:
            counts = self._latency[route] = [0] * (len(self._bounds) + 1)
            self._seconds[route] = 0.0
        counts[bisect_left(self._bounds, seconds)] += 1  # bucket `le` holds values <= it
        self._seconds[route] += seconds
        key = (route, status)
        self._requests[key] = self._requests.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("imflow_http_requests", "HTTP requests",
                                       labels=["route", "status"])
        for (route, status), n in sorted(self._requests.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("imflow_http_request_seconds", "HTTP request latency",
                                        labels=["route"])
        for route, counts in sorted(self._latency.items()):
            cumulative, total = [], 0
            for bound, n in zip([*map(floatToGoString, self._bounds), "+Inf"], counts, strict=True):
                total += n
                cumulative.append((bound, total))
            latency.add_metric([route], cumulative, self._seconds[route])
        yield latency


REQUEST_METRICS = RequestMetrics()
REGISTRY.register(REQUEST_METRICS)
