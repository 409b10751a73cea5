"""RequestMetrics exposes the same series a prometheus_client Counter and Histogram would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.web.request_metrics import BUCKETS, RequestMetrics

OBSERVED = [("/v1/messages", 202, 0.0004), ("/v1/messages", 202, 0.001),  # on a bound
            ("/v1/messages", 503, 0.0011), ("/v1/sync", 200, 0.3), ("/v1/sync", 200, 7.0),
            ("/v1/sync", 401, 2.5)]


def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]  # the library's creation stamps: not kept here


def test_same_exposition_as_prometheus_client() -> None:
    reference = CollectorRegistry()
    requests = Counter("imflow_http_requests_total", "HTTP requests", ["route", "status"],
                       registry=reference)
    latency = Histogram("imflow_http_request_seconds", "HTTP request latency", ["route"],
                        buckets=BUCKETS, registry=reference)
    ours = CollectorRegistry()
    metrics = RequestMetrics()
    ours.register(metrics)
    for route, status, seconds in OBSERVED:
        requests.labels(route, str(status)).inc()
        latency.labels(route).observe(seconds)
        metrics.observe(route, status, seconds)

    assert sorted(exposition(ours)) == sorted(exposition(reference))
    assert 'imflow_http_request_seconds_bucket{le="0.001",route="/v1/messages"} 2.0' \
        in exposition(ours)
