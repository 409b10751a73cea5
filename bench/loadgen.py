"""Open-loop load generator (its own process): POSTs 1:1 messages at a fixed rate.

Sends are scheduled by the clock, not by answers, so a slow server shows up as latency
and a growing backlog instead of a lower offered rate. Writes one JSON file:
{"sent": [[message_id, sender, recipient, t_send_ms, status, t_answer_ms], ...],
"offered", "late"} (status 0: no answer, t_answer_ms then when the request gave up).

    IMFLOW_SECRET=S python -m bench.loadgen --urls http://127.0.0.1:8080 --tag T \
        --pairs 200 --rate 1000 --duration 30 --out /tmp/sent.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
import uvloop

from app.auth import mint_token

MAX_IN_FLIGHT = 2000
# As many connections as requests in flight: a request must never wait in this client's
# own pool, or a server that is overloaded shows up as client-side queueing its admission
# cannot see (measured: answer max 4.5 s at 3,000/s offered with 512 per server).
MAX_CONNECTIONS = MAX_IN_FLIGHT
TIMEOUT_S = 30


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    aiohttp's client cost ~0.4 CPU-ms per request here, on the same 2 cores as the server
    it measures; this one writes pre-built bytes and reads status + Content-Length only.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:head_end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail(ConnectionError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:line_end if line_end > 0 else len(head)])
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return
        status, body = int(head[9:12]), bytes(self.buffer[head_end + 4:end])
        del self.buffer[:end]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


class _Pool:
    """Idle keep-alive connections to one server, opened on demand."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def post(self, path: str, token: str, body: bytes) -> tuple[int, bytes]:
        raw = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
               f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        async with self.slots:
            while self.idle and self.idle[-1].lost:  # closed by the server while idle
                self.idle.pop()
            if self.idle:
                conn = self.idle.pop()
            else:
                _, conn = await asyncio.get_running_loop().create_connection(
                    _Connection, self.host, self.port)
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    answer = await conn.request(raw)
            except BaseException:
                conn._fail(ConnectionError("request failed"))
                raise
            self.idle.append(conn)
            return answer

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    senders = [f"s{i}-{args.tag}" for i in range(args.pairs)]
    secret = os.environ["IMFLOW_SECRET"]  # not an argument: argv is public, and may start with "-"
    tokens = [mint_token(secret, s, ttl_s=3600) for s in senders]
    pools = [_Pool(u) for u in args.urls.split(",")]
    sent: list[list[Any]] = []
    in_flight = 0
    late = 0

    async def one(n: int) -> None:
        nonlocal in_flight
        i = n % args.pairs
        body = orjson.dumps({"to": f"r{i}-{args.tag}", "client_msg_id": f"{args.tag}-{n}",
                             "body": {"n": n, "text": "x" * args.body_bytes}})
        t_send = time.time() * 1000
        try:
            status, answer = await pools[n % len(pools)].post("/v1/messages", tokens[i], body)
            message_id = orjson.loads(answer).get("message_id") if status == 202 else None
        except Exception:  # counted as failed: status 0
            status, message_id = 0, None
        sent.append([message_id, senders[i], f"r{i}-{args.tag}", t_send, status,
                     time.time() * 1000])
        in_flight -= 1

    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    total = int(args.rate * args.duration)
    n = 0
    while n < total:
        due = min(total, int((time.monotonic() - start) * args.rate) + 1)
        while n < due:
            if in_flight >= MAX_IN_FLIGHT:
                late += due - n  # the server is this far behind: not sustained
                n = due
                break
            in_flight += 1
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        # the next send is due in 1/rate s: sleep until then (at least 1 ms), not a fixed tick
        await asyncio.sleep(max(0.001, start + (n + 1) / args.rate - time.monotonic()))
    elapsed_offer = time.monotonic() - start
    await asyncio.gather(*tasks)
    for pool in pools:
        pool.close()
    return {"sent": sent, "offered": total, "late": late,
            "offer_seconds": round(elapsed_offer, 3),
            "finished_seconds": round(time.monotonic() - start, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--body-bytes", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    uvloop.install()
    result = asyncio.run(run(args))
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
