"""Open-loop load generator (its own process): POSTs 1:1 messages at a fixed rate.

Sends are scheduled by the clock, not by answers, so a slow server shows up as latency
and a growing backlog instead of a lower offered rate. Writes one JSON file:
{"sent": [[message_id, sender, recipient, t_send_ms, status], ...], "offered", "late"}.

    python -m bench.loadgen --urls http://127.0.0.1:8080 --secret S --tag T \
        --pairs 200 --rate 1000 --duration 30 --out /tmp/sent.json
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
import orjson
import uvloop

from app.auth import mint_token

MAX_IN_FLIGHT = 2000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    senders = [f"s{i}-{args.tag}" for i in range(args.pairs)]
    tokens = [mint_token(args.secret, s, ttl_s=3600) for s in senders]
    urls = [u + "/v1/messages" for u in args.urls.split(",")]
    sent: list[list[Any]] = []
    in_flight = 0
    late = 0
    connector = aiohttp.TCPConnector(limit=512, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(n: int) -> None:
            nonlocal in_flight
            i = n % args.pairs
            body = orjson.dumps({"to": f"r{i}-{args.tag}", "client_msg_id": f"{args.tag}-{n}",
                                 "body": {"n": n, "text": "x" * args.body_bytes}})
            t_send = time.time() * 1000
            try:
                async with session.post(urls[n % len(urls)], data=body, headers={
                        "Authorization": f"Bearer {tokens[i]}",
                        "Content-Type": "application/json"}) as resp:
                    answer = await resp.read()
                    status = resp.status
                message_id = orjson.loads(answer).get("message_id") if status == 202 else None
            except (aiohttp.ClientError, TimeoutError):
                status, message_id = 0, None
            sent.append([message_id, senders[i], f"r{i}-{args.tag}", t_send, status])
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
            await asyncio.sleep(0.001)
        elapsed_offer = time.monotonic() - start
        await asyncio.gather(*tasks)
    return {"sent": sent, "offered": total, "late": late,
            "offer_seconds": round(elapsed_offer, 3),
            "finished_seconds": round(time.monotonic() - start, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", required=True)
    parser.add_argument("--secret", required=True)
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
