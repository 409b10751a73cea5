"""Per-user send rate limit (fixed 1 s windows), shared by every web process through
Redis, counted locally.

A check costs a dict lookup, not a Redis round trip: this process counts each user's
sends in the current window itself and adds what the other processes had reported to
Redis as of its last sync. While sends keep coming, every `sync_s` one pipeline adds
this process's new sends to each user's shared counter and reads the totals back. A
single process enforces the limit exactly; a user who spreads sends over several
processes may pass it by what the others admitted since their last sync (at most
`sync_s` worth). Redis being down does not stop the ingress: the counts wait for the
next sync. (A Redis call per check, even shared by concurrent checks, was a fifth of the
web's CPU at 500 requests a second.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from app.errors import StoreUnavailable
from app.stores import keys, scripts
from app.stores.redis_client import RedisClient, by_slot, redis_store, run_script

log = logging.getLogger(__name__)


class WindowCounts:
    """One process's view of every user's sends in the current 1 s window (pure logic:
    the Redis sync is `RateLimiter`'s)."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.time) -> None:
        self.per_second = per_second
        self._clock = clock
        self.window = int(clock())
        self.own: dict[str, int] = {}  # this process's sends in the window
        self.unsynced: dict[str, int] = {}  # of which not yet added to the shared counter
        self.others: dict[str, int] = {}  # the other processes', as of the last sync

    def retry_after(self, user: str) -> float | None:
        """Count one send; None if within the limit, else seconds until it may retry."""
        now = self._clock()
        if int(now) != self.window:
            self.window = int(now)
            self.own, self.unsynced, self.others = {}, {}, {}
        own = self.own.get(user, 0)
        if own + self.others.get(user, 0) >= self.per_second:
            return max(0.001, self.window + 1 - now)
        self.own[user] = own + 1
        self.unsynced[user] = self.unsynced.get(user, 0) + 1
        return None

    def take_unsynced(self) -> tuple[int, dict[str, int]]:
        """The window and the sends to add to the shared counters now."""
        taken, self.unsynced = self.unsynced, {}
        return self.window, taken

    def synced(self, window: int, totals: dict[str, int]) -> None:
        """The shared counters after this process added its sends of `window`."""
        if window == self.window:
            for user, total in totals.items():
                self.others[user] = total - self.own.get(user, 0)

    def sync_failed(self, window: int, sends: dict[str, int]) -> None:
        """Keep the sends that did not reach Redis for the next sync (same window only)."""
        if window == self.window:
            for user, n in sends.items():
                self.unsynced[user] = self.unsynced.get(user, 0) + n


@redis_store
class RateLimiter:
    def __init__(self, client: RedisClient, *, per_second: int, sync_s: float = 0.05,
                 clock: Callable[[], float] = time.time) -> None:
        self._redis = client
        self._counts = WindowCounts(per_second, clock)
        self._sync_s = sync_s
        self._syncer: asyncio.Task[None] | None = None

    def retry_after(self, user: str) -> float | None:
        """Count one send; None if within the limit, else seconds until it may retry."""
        wait = self._counts.retry_after(user)
        if wait is None and self._syncer is None:
            self._syncer = asyncio.create_task(self._sync(), name="imflow-rate-limit-sync")
        return wait

    @property
    def shared(self) -> bool:
        """Whether every send counted so far has reached Redis (no sync under way)."""
        return self._syncer is None and not self._counts.unsynced

    async def stop(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()

    async def _sync(self) -> None:
        try:
            while self._counts.unsynced:
                await asyncio.sleep(self._sync_s)
                window, sends = self._counts.take_unsynced()
                try:
                    totals = await self.add_sends(window, sends)
                except StoreUnavailable as exc:
                    log.warning("rate limit counts not shared (kept for the next sync): %s",
                                exc)
                    self._counts.sync_failed(window, sends)
                    continue
                self._counts.synced(window, totals)
        finally:
            self._syncer = None

    async def add_sends(self, window: int, sends: dict[str, int]) -> dict[str, int]:
        """Add `sends` to the users' shared counters of `window` (one call per cluster
        slot, all in one pipeline); the totals."""
        groups = by_slot(self._redis, list(sends.items()),
                         lambda item: keys.send_rate(item[0], window))
        results = await run_script(self._redis, scripts.ADD_SENDS, [
            ([keys.send_rate(user, window) for user, _ in group], [n for _, n in group])
            for group in groups])
        return {user: int(total) for group, totals in zip(groups, results, strict=True)
                for (user, _), total in zip(group, totals, strict=True)}
