"""The one way imflow processes connect to Redis.

A blocking pool: under a burst, a request waits (up to `redis_pool_timeout_s`) for a
free connection instead of failing at once, and the pool size bounds what one process
asks of Redis. Every store wears `redis_store`, which turns redis-py's "Redis did not
answer" errors into `StoreUnavailable`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions

from app.errors import StoreUnavailable
from app.settings import Settings


def create_redis(settings: Settings) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
    )
    return aioredis.Redis(connection_pool=pool)


# What redis-py raises when Redis does not answer (a refused or dropped connection, a
# timeout, no free pooled connection in time).
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

C = TypeVar("C", bound=type)


def _translated(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except REDIS_DOWN as exc:
            raise StoreUnavailable(f"Redis did not answer: {exc!r}") from exc
    return call


def redis_store(cls: C) -> C:
    """Class decorator of a Redis store: its public coroutine methods raise
    `StoreUnavailable`, never redis-py's errors, so callers (the web, the agents) handle
    one error whatever the store."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translated(member))
    return cls
