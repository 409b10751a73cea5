"""The web's site accepts every connection waiting when its socket turns readable, on
uvloop (whose libuv accepts one per loop iteration), and aiohttp serves each of them."""

from __future__ import annotations

import asyncio
import socket

import uvloop
from aiohttp import web

from app.web.serve import AcceptingSite

WAITING = 20
ITERATIONS = 5  # fewer than WAITING: accepting one per iteration cannot keep up


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def served_within_a_few_iterations() -> int:
    """How many of `WAITING` connections, queued while the loop did not run, aiohttp
    has taken on after `ITERATIONS` loop iterations; each is then answered."""
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = AcceptingSite(runner, "127.0.0.1", 0, backlog=64)
    await site.start()
    try:
        # Blocking connects complete in the kernel while the loop does not run.
        clients = [socket.create_connection(("127.0.0.1", site.port)) for _ in range(WAITING)]
        for _ in range(ITERATIONS):
            await asyncio.sleep(0)
        assert runner.server is not None
        taken = len(runner.server.connections)
        loop = asyncio.get_running_loop()
        for client in clients:
            client.setblocking(False)
            await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for client in clients:
            answer = await asyncio.wait_for(loop.sock_recv(client, 4096), 10)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
            client.close()
        return taken
    finally:
        await runner.cleanup()


def test_every_connection_waiting_is_taken_at_once_and_served() -> None:
    assert uvloop.run(served_within_a_few_iterations()) == WAITING
