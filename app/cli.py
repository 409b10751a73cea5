"""`imflow` command line: run the web process, mint dev tokens, create topics and tables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from app.settings import get_settings


def _web(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from app.web.app import create_app

    settings = get_settings()
    settings = settings.model_copy(update={"host": args.host or settings.host,
                                           "port": args.port or settings.port})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvloop.install()
    web.run_app(create_app(settings), host=settings.host, port=settings.port,
                access_log=None, print=lambda *_: None)
    return 0


def _token(args: argparse.Namespace) -> int:
    from app.auth import mint_token

    settings = get_settings()
    print(mint_token(settings.secret.get_secret_value(), args.user,
                     device=args.device, ttl_s=args.ttl or settings.token_ttl_s))
    return 0


def _init(args: argparse.Namespace) -> int:
    from app.stores.history import ensure_table
    from app.stores.kafka import ensure_topics

    settings = get_settings()
    created = asyncio.run(ensure_topics(settings))
    print(f"kafka topics: created {created or 'none'} (idempotent)")
    made = ensure_table(settings)
    print(f"hbase table {settings.hbase_table_name}: {'created' if made else 'exists'}")
    return 0


def _openapi(args: argparse.Namespace) -> int:
    import orjson

    from app.web.app import OPENAPI_PATH
    from app.web.openapi import build

    OPENAPI_PATH.write_bytes(orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {OPENAPI_PATH}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("web", help="run one web process (ingress, sync, history, WebSocket)")
    p.add_argument("--host", help="default: IMFLOW_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: IMFLOW_PORT or 8080")
    p.set_defaults(func=_web)

    p = sub.add_parser("token", help="mint a development JWT for USER")
    p.add_argument("user")
    p.add_argument("--device", default="default")
    p.add_argument("--ttl", type=int, help="seconds (default: IMFLOW_TOKEN_TTL_S or 1 day)")
    p.set_defaults(func=_token)

    p = sub.add_parser("init", help="create the Kafka topics and the HBase table (idempotent)")
    p.set_defaults(func=_init)

    p = sub.add_parser("openapi", help="regenerate app/web/openapi.json from the models")
    p.set_defaults(func=_openapi)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
