"""The one way imflow processes connect to Redis.

A blocking pool: under a burst, a request waits (up to `redis_pool_timeout_s`) for a
free connection instead of failing at once, and the pool size bounds what one process
asks of Redis.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from app.settings import Settings


def create_redis(settings: Settings) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
    )
    return aioredis.Redis(connection_pool=pool)
