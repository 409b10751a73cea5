"""The WebSocket gateway (`GET /v1/ws`): presence plus delivery of pushed records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import orjson
from aiohttp import WSMsgType, web

from app.errors import BadRequest
from app.web.context import PRESENCE, PUSH_HUB, SETTINGS, identity

log = logging.getLogger(__name__)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    me = identity(request)  # 401 before the upgrade
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat_s)
    if not ws.can_prepare(request).ok:
        raise BadRequest("not a WebSocket upgrade request (RFC 6455 handshake headers)",
                         code="not_a_websocket_request")
    presence, hub = request.app[PRESENCE], request.app[PUSH_HUB]
    await ws.prepare(request)
    node = settings.node_id or f"{settings.host}:{settings.port}"
    connection = f"{node}/{uuid.uuid4().hex}"  # a reconnect must not lose to a stale close

    async def keep_presence() -> None:
        # Refreshed well within the TTL; a process that dies leaves entries that expire.
        while True:
            await presence.heartbeat(me.user, me.device, connection)
            await asyncio.sleep(settings.presence_ttl_s / 3)

    await presence.connected(me.user, me.device, connection)
    refresher = asyncio.create_task(keep_presence())
    try:
        ready = {"type": "ready", "user": me.user, "device": me.device}
        await hub.attach(me.user, ws, greeting=orjson.dumps(ready).decode())
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data.strip() in ('{"type":"ping"}', "ping"):
                await ws.send_str('{"type":"pong"}')
            elif msg.type == WSMsgType.ERROR:
                log.info("websocket of %s/%s closed: %r", me.user, me.device, ws.exception())
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await hub.detach(me.user, ws)
        await presence.disconnected(me.user, me.device, connection)
    return ws
