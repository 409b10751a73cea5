"""The web side of push: Redis pub/sub fanned out to this process's sockets.

The process subscribes to `push:{user}` while at least one device of that user is
connected here, and forwards each published record to every local socket of the user.

On one Redis server that is one pub/sub connection. On a Redis Cluster the push agent
publishes with SPUBLISH, which keeps a message on the shard of its channel's slot, so the
hub holds one connection per shard it has channels on and SSUBSCRIBEs each channel there.
When a shard's master fails (the connection drops) or a slot moves (Redis then
unsubscribes the channel itself), the channels are subscribed again on the node that now
serves their slot. What is published meanwhile is not pushed; the sync delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import Counter, Gauge

from app.stores import keys
from app.stores.redis_client import REDIS_DOWN, RedisClient, is_cluster, node_of

log = logging.getLogger(__name__)

OPEN_SOCKETS = Gauge("imflow_ws_open", "WebSockets open on this web process")
PUSHES = Counter("imflow_ws_pushes_total", "Frames pushed to WebSockets (one per device)")
RESUBSCRIBED = Counter("imflow_ws_resubscribed_total",
                       "Push channels subscribed again after a Redis failover or slot move")


class _Subscription:
    """One pub/sub connection (one per shard on a cluster) and its listener task."""

    def __init__(self, hub: PushHub, name: str, pubsub: Any, sharded: bool) -> None:
        self.name = name
        self.channels: set[str] = set()
        self._hub = hub
        self._pubsub = pubsub
        self._sharded = sharded
        self._active = asyncio.Event()  # set while it has channels (listen() needs one)
        self._task = asyncio.create_task(self._listen(), name=f"push-hub-{name}")

    async def add(self, channel: str) -> None:
        if self._sharded:
            await self._pubsub.ssubscribe(channel)
        else:
            await self._pubsub.subscribe(channel)
        self.channels.add(channel)
        self._active.set()

    async def remove(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._sharded:
            await self._pubsub.sunsubscribe(channel)
        else:
            await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()

    async def _listen(self) -> None:
        while True:
            await self._active.wait()
            try:
                async for item in self._pubsub.listen():
                    kind = item.get("type")
                    if kind in ("message", "smessage"):
                        await self._hub.forward(item["channel"].decode(), item["data"].decode())
                    elif kind == "sunsubscribe" and item["channel"].decode() in self.channels:
                        # Redis dropped it (its slot moved): follow the slot
                        self._hub.relocate(self, [item["channel"].decode()])
                if not self.channels:
                    self._active.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._sharded:  # redis-py subscribes again when it reconnects
                    log.warning("push hub listener error, reconnecting: %r", exc)
                    await asyncio.sleep(0.5)
                    continue
                log.warning("push hub lost shard %s (%r); moving its channels", self.name, exc)
                self._hub.relocate(self, list(self.channels), dead=True)
                return


class PushHub:
    def __init__(self, client: RedisClient, node_id: str) -> None:
        self._client = client
        self._sharded = is_cluster(client)
        self._sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._subscriptions: dict[str, _Subscription] = {}  # by node name
        self._where: dict[str, _Subscription] = {}  # channel -> its subscription
        self._moves: set[asyncio.Task[None]] = set()
        self._idle_channel = keys.node_channel(node_id)  # keeps the connection subscribed

    async def start(self) -> None:
        if is_cluster(self._client):
            await self._client.initialize()  # the slot map, to find each channel's shard
            await self._subscription_for(self._idle_channel).add(self._idle_channel)

    async def stop(self) -> None:
        for task in list(self._moves):
            task.cancel()
        for sub in list(self._subscriptions.values()):
            await sub.close()
        self._subscriptions.clear()

    def local_devices(self, user: str) -> int:
        return len(self._sockets.get(user, ()))

    async def attach(self, user: str, ws: web.WebSocketResponse, greeting: str) -> None:
        """Subscribe `user`'s channel, send `greeting` first, then forward to `ws`.

        The greeting (the `ready` frame) is always the socket's first frame: a record
        published while it is being written skips this socket, as one published before
        the subscription would; the client's sync after `ready` has both."""
        async with self._lock:
            if not self._sockets.get(user):
                await self._subscribe(keys.push_channel(user))
            try:
                await ws.send_str(greeting)
            except BaseException:
                if not self._sockets.get(user):  # the client left during the handshake
                    await self._unsubscribe(user)
                raise
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
                await self._unsubscribe(user)

    async def _unsubscribe(self, user: str) -> None:
        channel = keys.push_channel(user)
        sub = self._where.pop(channel, None)
        if sub is not None:
            try:
                await sub.remove(channel)
            except REDIS_DOWN as exc:  # its shard is failing over: it goes anyway
                log.info("unsubscribing %s: %r", channel, exc)

    async def forward(self, channel: str, payload: str) -> None:
        """Send a published record to every local socket of the channel's user."""
        user = keys.user_of_push_channel(channel)
        for ws in list(self._sockets.get(user, ())):
            if not ws.closed:
                await ws.send_str(payload)
                PUSHES.inc()

    def relocate(self, sub: _Subscription, channels: list[str], *, dead: bool = False) -> None:
        """Subscribe `channels` again where their slots are served now (in the background:
        this runs inside `sub`'s listener)."""
        task = asyncio.create_task(self._relocate(sub, channels, dead), name="push-hub-move")
        self._moves.add(task)
        task.add_done_callback(self._moves.discard)

    async def _relocate(self, sub: _Subscription, channels: list[str], dead: bool) -> None:
        assert is_cluster(self._client)
        async with self._lock:
            if dead and self._subscriptions.get(sub.name) is sub:
                del self._subscriptions[sub.name]
            sub.channels.difference_update(channels)
        delay = 0.2
        while True:
            try:
                await self._client.nodes_manager.initialize()  # the cluster's slots as of now
                async with self._lock:
                    for channel in channels:
                        if self._where.get(channel) is sub:  # still wanted, not moved yet
                            await self._subscribe(channel)
                            RESUBSCRIBED.inc()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the cluster is still failing over
                log.warning("push hub cannot subscribe %d channels yet: %r", len(channels), exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        if dead:
            await sub.close()

    async def _subscribe(self, channel: str) -> None:
        sub = self._subscription_for(channel)
        await sub.add(channel)
        self._where[channel] = sub

    def _subscription_for(self, channel: str) -> _Subscription:
        node = node_of(self._client, channel) if is_cluster(self._client) else None
        name = node.name if node is not None else "redis"
        sub = self._subscriptions.get(name)
        if sub is None:
            pubsub = (self._client.pubsub() if node is None
                      else aioredis.Redis(host=node.host, port=int(node.port)).pubsub())
            sub = self._subscriptions[name] = _Subscription(self, name, pubsub, self._sharded)
        return sub
