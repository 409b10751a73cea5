"""The web side of push: one Redis pub/sub connection per web process, fanned out to sockets.

The process subscribes to `push:{user}` while at least one device of that user is
connected here, and forwards each published record to every local socket of the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter, Gauge

from app.stores import keys

log = logging.getLogger(__name__)

OPEN_SOCKETS = Gauge("imflow_ws_open", "WebSockets open on this web process")
PUSHES = Counter("imflow_ws_pushes_total", "Frames pushed to WebSockets (one per device)")


class PushHub:
    def __init__(self, client: aioredis.Redis, node_id: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._idle_channel = keys.node_channel(node_id)  # keeps the connection subscribed

    async def start(self) -> None:
        await self._pubsub.subscribe(self._idle_channel)
        self._task = asyncio.create_task(self._listen(), name="push-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()

    def local_devices(self, user: str) -> int:
        return len(self._sockets.get(user, ()))

    async def attach(self, user: str, ws: web.WebSocketResponse) -> None:
        async with self._lock:
            if not self._sockets.get(user):
                await self._pubsub.subscribe(keys.push_channel(user))
            self._sockets[user].add(ws)
            OPEN_SOCKETS.inc()

    async def detach(self, user: str, ws: web.WebSocketResponse) -> None:
        async with self._lock:
            sockets = self._sockets.get(user)
            if sockets is None or ws not in sockets:
                return
            sockets.discard(ws)
            OPEN_SOCKETS.dec()
            if not sockets:
                del self._sockets[user]
                await self._pubsub.unsubscribe(keys.push_channel(user))

    async def _listen(self) -> None:
        while True:
            try:
                async for item in self._pubsub.listen():
                    if item.get("type") != "message":
                        continue
                    user = keys.user_of_push_channel(item["channel"].decode())
                    payload = item["data"].decode()
                    for ws in list(self._sockets.get(user, ())):
                        if not ws.closed:
                            await ws.send_str(payload)
                            PUSHES.inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis dropped: redis-py resubscribes on reconnect
                log.warning("push hub listener error, reconnecting: %r", exc)
                await asyncio.sleep(0.5)
