"""The baseline for `ingress_ratio_vs_bare`: a bare aiohttp + orjson handler on uvloop that
parses the same POST body and answers 202, with no auth, validation, Redis or Kafka."""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    answer = {"message_id": "0" * 32, "client_msg_id": body.get("client_msg_id")}
    return web.Response(body=orjson.dumps(answer), status=202, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
                print=lambda *_: None)


if __name__ == "__main__":
    main()
