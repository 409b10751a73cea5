"""Per-user send rate limit in Redis, shared by every web process (fixed 1 s windows).

Concurrent checks share one Redis call: a check joins the batch being collected while
the previous call is in flight, so under load a request pays a fraction of a round trip
(one call per request was a quarter of the ingress CPU). At low load a batch is one check.
"""

from __future__ import annotations

import asyncio
import time

from app.stores import keys, scripts
from app.stores.redis_client import RedisClient, by_slot, redis_store, run_script


@redis_store
class RateLimiter:
    def __init__(self, client: RedisClient, *, per_second: int) -> None:
        self._per_second = per_second
        self._redis = client
        self._pending: list[tuple[str, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def retry_after(self, user: str) -> float | None:
        """Count one send; None if within the limit, else seconds until it may retry."""
        now = time.time()
        window = int(now)
        verdict: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((keys.send_rate(user, window), verdict))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="imflow-rate-limit")
        over = await verdict
        return None if not over else max(0.001, window + 1 - now)

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                groups = by_slot(self._redis, batch, lambda hit: hit[0])  # one call per slot
                try:
                    results = await run_script(
                        self._redis, scripts.HIT_RATE,
                        [([key for key, _ in group], [self._per_second]) for group in groups])
                except Exception as exc:  # every waiter gets the store's error
                    for _, verdict in batch:
                        if not verdict.done():
                            verdict.set_exception(exc)
                    continue
                for group, overs in zip(groups, results, strict=True):
                    for (_, verdict), over in zip(group, overs, strict=True):
                        if not verdict.done():  # not if the request was cancelled meanwhile
                            verdict.set_result(int(over))
        finally:
            self._flusher = None
