"""Per-user send rate limit in Redis, shared by every web process (fixed 1 s windows)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

# KEYS: the window's counter; ARGV: limit. Returns 0 if allowed, else ms until the next window.
_HIT_LUA = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
if n > tonumber(ARGV[1]) then return 1 end
return 0
"""


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, per_second: int) -> None:
        self._per_second = per_second
        self._hit = client.register_script(_HIT_LUA)

    async def retry_after(self, user: str) -> float | None:
        """Count one send; None if within the limit, else seconds until it may retry."""
        now = time.time()
        window = int(now)
        over = await self._hit(keys=[f"rate:{{{user}}}:{window}"], args=[self._per_second])
        return None if not over else max(0.001, window + 1 - now)
