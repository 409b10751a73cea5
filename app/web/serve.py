"""The web process's server: aiohttp handles each connection, `AcceptingSite` accepts them.

Under uvloop, libuv accepts one connection per event-loop iteration (since libuv 1.45,
its PR 3696). Past what the box sustains an iteration takes 20-500 ms here, so a burst of
new connections waited in the kernel's accept queue for seconds, and past its 2,048 the
SYNs were dropped and retried 1, 3, 7 s later: requests that admission never saw and so
could not answer (2,000/s offered to one web, 2026-12-04: one accept4 per epoll_pwait,
the accept queue full, 600-2,800 of 60,000 requests unanswered within 15 s). The site
accepts every waiting connection, up to `ACCEPTS_PER_WAKEUP`, each time the listening
socket is readable, as asyncio's own event loop does.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import signal
import socket

from aiohttp import web

from app.heap import settle_heap
from app.settings import Settings

log = logging.getLogger(__name__)

ACCEPTS_PER_WAKEUP = 512  # bounded, so one wakeup does not hold the loop for long
ACCEPT_RETRY_S = 1.0  # out of file descriptors: stop accepting for this long


class AcceptingSite(web.BaseSite):
    """A TCP site that accepts connections itself and hands each to aiohttp's server."""

    __slots__ = ("_connecting", "_host", "_listener", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._listener: socket.socket | None = None
        self._connecting: set[asyncio.Task[object]] = set()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The bound port (the requested one may be 0)."""
        return self._listener.getsockname()[1] if self._listener else self._port

    async def start(self) -> None:
        await super().start()
        listener = socket.create_server((self._host, self._port), backlog=self._backlog)
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    async def stop(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        await super().stop()

    def _accept(self) -> None:
        listener, server = self._listener, self._runner.server
        assert listener is not None and server is not None
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # none waiting
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.warning("cannot accept connections (%s); retrying in %.0f s",
                            exc.strerror, ACCEPT_RETRY_S)
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_S, self._resume, listener)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task: asyncio.Task[object] = loop.create_task(
                loop.connect_accepted_socket(server, conn))
            self._connecting.add(task)
            task.add_done_callback(functools.partial(self._connected, conn))

    def _connected(self, conn: socket.socket, task: asyncio.Task[object]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            conn.close()  # e.g. reset by the peer before the transport was made

    def _resume(self, listener: socket.socket) -> None:
        if listener is self._listener:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve `app` on the settings' host and port until SIGINT or SIGTERM, then shut down
    as `web.run_app` does (open requests finish, cleanup contexts run)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = AcceptingSite(runner, settings.host, settings.port,
                             backlog=settings.listen_backlog)
        await site.start()
        settle_heap()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
    finally:
        await runner.cleanup()
