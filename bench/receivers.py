"""WebSocket receivers (their own process): one device per recipient, timestamps each push.

Writes {"received": [[message_id, t_recv_ms], ...], "connected": n} when told to stop
(SIGTERM) or after --seconds.

    IMFLOW_SECRET=S python -m bench.receivers --urls http://127.0.0.1:8080 --tag T --pairs 200 \
        --seconds 60 --out /tmp/recv.json --ready-file /tmp/recv.ready
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from app.auth import mint_token


async def run(args: argparse.Namespace) -> dict[str, Any]:
    received: list[list[Any]] = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    urls = args.urls.split(",")
    secret = os.environ["IMFLOW_SECRET"]
    connected = 0
    all_connected = asyncio.Event()

    # One connection per device: no pool limit (aiohttp's default is 100).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def device(i: int) -> None:
            nonlocal connected
            token = mint_token(secret, f"r{i}-{args.tag}", device="bench", ttl_s=3600)
            url = urls[i % len(urls)] + "/v1/ws"
            async with session.ws_connect(url, headers={"Authorization": f"Bearer {token}"},
                                          heartbeat=30) as ws:
                await ws.receive_json()  # ready
                connected += 1
                if connected == args.pairs:
                    all_connected.set()
                async for frame in ws:
                    if frame.type != aiohttp.WSMsgType.TEXT:
                        break
                    now = time.time() * 1000
                    data = orjson.loads(frame.data)
                    if data.get("type") == "message":
                        received.append([data["message"]["message_id"], now])

        tasks = [asyncio.create_task(device(i)) for i in range(args.pairs)]
        await asyncio.wait_for(all_connected.wait(), timeout=60)
        await asyncio.to_thread(Path(args.ready_file).write_text, str(connected))
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.seconds)
        except TimeoutError:
            pass
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"received": received, "connected": connected}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--urls", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--out", required=True)
    parser.add_argument("--ready-file", required=True)
    args = parser.parse_args()
    uvloop.install()
    result = asyncio.run(run(args))
    with open(args.out, "wb") as f:
        f.write(orjson.dumps(result))


if __name__ == "__main__":
    main()
