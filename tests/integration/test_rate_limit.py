"""The send rate limit on the real Redis: two limiters (two web processes) share one
user's sends through it."""

from __future__ import annotations

import uuid

import pytest

from app.devstack import wait_for
from app.stores.ratelimit import RateLimiter
from app.stores.redis_client import RedisClient

pytestmark = pytest.mark.services
NOW = 2_000_000_000.5  # both processes count in the same window


async def shared(limiter: RateLimiter) -> bool:
    return limiter.shared


async def test_two_processes_share_a_users_sends(redis: RedisClient) -> None:
    first, second = (RateLimiter(redis, per_second=100, sync_s=0.01, clock=lambda: NOW)
                     for _ in range(2))
    user = f"rl-{uuid.uuid4().hex[:8]}"
    try:
        assert all(first.retry_after(user) is None for _ in range(60))
        await wait_for(lambda: shared(first), within=5, what="the first's sends in Redis")
        assert second.retry_after(user) is None  # its sync brings back the first's 60
        await wait_for(lambda: shared(second), within=5, what="the second's sync")
        admitted = [second.retry_after(user) is None for _ in range(60)]
        assert admitted.count(True) == 100 - 60 - 1
    finally:
        await first.stop()
        await second.stop()
