"""Operational endpoints: liveness, readiness (Kafka, Redis, HBase) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.web.context import HISTORY, PRODUCER, REDIS, json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app

    async def redis_ping() -> None:
        await app[REDIS].ping()

    checks: dict[str, Callable[[], Awaitable[None]]] = {
        "kafka": app[PRODUCER].ping,
        "redis": redis_ping,
        "hbase": app[HISTORY].ping,
    }

    async def run(check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), timeout=3)
        except Exception as exc:  # readiness reports any failure, whatever its type
            return f"unavailable: {exc!r}"[:300]
        return "ok"

    results = await asyncio.gather(*(run(c) for c in checks.values()))
    report = dict(zip(checks, results, strict=True))
    ready = all(r == "ok" for r in results)
    return json_response({"ready": ready, "checks": report}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
