"""`imflow` command line: run the web process, mint dev tokens, create topics and tables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime

import orjson

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
    print(mint_token(settings.jwt_secret(), args.user,
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
    from app.web.app import OPENAPI_PATH
    from app.web.openapi import build

    OPENAPI_PATH.write_bytes(orjson.dumps(build(), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {OPENAPI_PATH}")
    return 0


def _time_ms(value: str) -> int:
    """Milliseconds since the epoch, from a number of ms or an ISO-8601 time (UTC if naive)."""
    if value.isdigit():
        return int(value)
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _replay(args: argparse.Namespace) -> int:
    from app.usecases.replay import ReplayRange, replay

    rng = ReplayRange(
        partitions=[int(p) for p in args.partitions.split(",")] if args.partitions else None,
        from_offset=args.from_offset, to_offset=args.to_offset,
        from_ms=_time_ms(args.from_time) if args.from_time else None,
        to_ms=_time_ms(args.to_time) if args.to_time else None,
    )
    summary = asyncio.run(replay(get_settings(), args.sinks.split(","), rng,
                                 show_progress=not args.quiet))
    print(orjson.dumps({
        "read": summary.read, "malformed": summary.malformed,
        "inbox_deliveries": summary.inbox_deliveries, "inbox_written": summary.inbox_written,
        "inbox_skipped_duplicates": summary.inbox_skipped,
        "history_rows_written": summary.history_rows, "pushed": summary.pushed,
        "partitions": {str(p): list(b) for p, b in summary.per_partition.items()},
    }).decode())
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

    p = sub.add_parser("replay", help="re-apply a range of imflow.messages to sinks "
                       "(idempotent; rebuilds a wiped Redis or HBase)")
    from app.usecases.sinks import SINKS
    p.add_argument("--sinks", default="inbox,history",
                   help=f"comma list of {','.join(SINKS)}")
    p.add_argument("--partitions", help="comma list (default: all)")
    p.add_argument("--from-offset", type=int, help="first offset, in every chosen partition")
    p.add_argument("--to-offset", type=int, help="stop before this offset")
    p.add_argument("--from-time", help="ISO-8601 time or epoch ms: first record at/after it")
    p.add_argument("--to-time", help="ISO-8601 time or epoch ms: stop before it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)

    p = sub.add_parser("openapi", help="regenerate app/web/openapi.json from the models")
    p.set_defaults(func=_openapi)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
