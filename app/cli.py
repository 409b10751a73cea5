"""`imflow` command line: run the web process, mint dev tokens, create topics and tables,
replay, send and tail messages, and show the agents' lag."""

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

    from app.web.app import create_app
    from app.web.serve import serve

    settings = get_settings()
    settings = settings.model_copy(update={"host": args.host or settings.host,
                                           "port": args.port or settings.port})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvloop.run(serve(create_app(settings), settings))
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
        from_offset=args.from_offset, from_index=args.from_index, to_offset=args.to_offset,
        from_ms=_time_ms(args.from_time) if args.from_time else None,
        to_ms=_time_ms(args.to_time) if args.to_time else None,
    )
    summary = asyncio.run(replay(get_settings(), args.sinks.split(","), rng,
                                 show_progress=not args.quiet))
    print(orjson.dumps({
        "records": summary.records, "read": summary.read, "malformed": summary.malformed,
        "inbox_deliveries": summary.inbox_deliveries, "inbox_written": summary.inbox_written,
        "inbox_skipped_duplicates": summary.inbox_skipped,
        "history_rows_written": summary.history_rows, "pushed": summary.pushed,
        "partitions": {str(p): list(b) for p, b in summary.per_partition.items()},
    }).decode())
    return 0


def _rebuild_groups(args: argparse.Namespace) -> int:
    from tables.groups_rebuild import rebuild_groups

    done = asyncio.run(rebuild_groups(get_settings()))
    print(orjson.dumps({"records": done.records, "groups": done.groups,
                        "written": done.written}).decode())
    return 0


def _web_url(args: argparse.Namespace) -> str:
    settings = get_settings()
    return str(args.url or f"http://{settings.host}:{settings.port}").rstrip("/")


def _dev_token(user: str, device: str) -> str:
    from app.auth import mint_token

    settings = get_settings()
    return mint_token(settings.jwt_secret(), user, device=device, ttl_s=settings.token_ttl_s)


def _send(args: argparse.Namespace) -> int:
    """POST /v1/messages as USER (a development token): what a client would do."""
    import uuid

    import aiohttp

    payload: dict[str, object] = {
        "client_msg_id": args.client_msg_id or f"cli-{uuid.uuid4().hex}",
        "type": args.type, "body": {"text": args.text},
    }
    if args.group:
        payload["conversation"] = f"g:{args.group}"
    else:
        payload["to"] = args.to
    headers = {"Authorization": f"Bearer {_dev_token(args.sender, args.device)}"}

    async def post() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.post(
                _web_url(args) + "/v1/messages", json=payload, headers=headers) as resp:
            return resp.status, await resp.read()

    status, body = asyncio.run(post())
    print(body.decode(errors="replace"))
    return 0 if status == 202 else 1


def _format_push(message: dict[str, object]) -> str:
    body = message.get("body")
    text = body.get("text", body) if isinstance(body, dict) else body
    when = datetime.fromtimestamp(int(str(message["ts"])) / 1000, UTC).strftime("%H:%M:%S")
    return (f"{when} {message['conversation_id']} #{message['seq']} {message['sender']}: "
            f"{text if isinstance(text, str) else orjson.dumps(text).decode()}")


def _tail(args: argparse.Namespace) -> int:
    """Print USER's live pushes (GET /v1/ws) until Ctrl-C, or until --count of them."""
    import aiohttp

    headers = {"Authorization": f"Bearer {_dev_token(args.user, args.device)}"}

    async def follow() -> int:
        seen = 0
        async with aiohttp.ClientSession() as session, session.ws_connect(
                _web_url(args) + "/v1/ws", headers=headers, heartbeat=20) as ws:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    break
                data = orjson.loads(frame.data)
                if data.get("type") == "ready":
                    print(f"tailing {data['user']} (device {data['device']}); Ctrl-C stops",
                          file=sys.stderr, flush=True)
                elif data.get("type") == "message":
                    message = data["message"]
                    print(orjson.dumps(message).decode() if args.json
                          else _format_push(message), flush=True)
                    seen += 1
                    if args.count and seen >= args.count:
                        return 0
        print("the server closed the connection", file=sys.stderr)
        return 1

    try:
        return asyncio.run(follow())
    except KeyboardInterrupt:
        return 0


def _stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from app.usecases.stats import collect, totals

    settings = get_settings()
    try:
        rows = asyncio.run(collect(settings, interval_s=args.interval))
    except ValueError as exc:  # a topic is missing
        print(f"imflow stats: {exc} (does it exist? `imflow init` creates the topics)",
              file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps({"partitions": [r.as_dict() for r in rows],
                            "agents": totals(rows), "interval_s": args.interval}).decode())
        return 0
    table = Table(title=f"imflow agents (rate over {args.interval:g} s)")
    for name in ("agent", "topic", "partition", "committed", "end", "lag", "rate/s"):
        table.add_column(name, justify="left" if name in ("agent", "topic") else "right")
    sums = totals(rows)
    last = None
    for row in rows:
        if last is not None and row.agent != last:
            agg = sums[last]
            table.add_row(f"{last} total", "", "", "", "", str(agg["lag"]), f"{agg['rate']:g}",
                          end_section=True)
        last = row.agent
        table.add_row(row.agent, row.topic, str(row.partition),
                      "-" if row.committed is None else str(row.committed), str(row.end),
                      str(row.lag), f"{row.rate:g}")
    if last is not None:
        agg = sums[last]
        table.add_row(f"{last} total", "", "", "", "", str(agg["lag"]), f"{agg['rate']:g}")
    Console().print(table)
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
    p.add_argument("--from-index", type=int, help="with --from-offset: the first message "
                   "inside the batch record at that offset (a message's address is "
                   "partition, offset, index)")
    p.add_argument("--to-offset", type=int, help="stop before this offset")
    p.add_argument("--from-time", help="ISO-8601 time or epoch ms: first record at/after it")
    p.add_argument("--to-time", help="ISO-8601 time or epoch ms: stop before it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)

    p = sub.add_parser("rebuild-groups", help="rewrite the group membership projection "
                       "(Redis) from the sequencer's state changelog, whatever the groups' "
                       "age (idempotent; after a Redis wipe, before or with `replay`)")
    p.set_defaults(func=_rebuild_groups)

    p = sub.add_parser("openapi", help="regenerate app/web/openapi.json from the models")
    p.set_defaults(func=_openapi)

    p = sub.add_parser("send", help="send TEXT as USER through the web API (a dev token)")
    p.add_argument("--as", dest="sender", required=True, metavar="USER")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="USER", help="a one-to-one message")
    target.add_argument("--group", metavar="GID", help="a message to group GID")
    p.add_argument("text")
    p.add_argument("--type", default="text")
    p.add_argument("--client-msg-id", help="default: a new random id (give one to retry)")
    p.add_argument("--device", default="cli")
    p.add_argument("--url", help="web base URL (default: http://IMFLOW_HOST:IMFLOW_PORT)")
    p.set_defaults(func=_send)

    p = sub.add_parser("tail", help="print USER's live pushes (WebSocket) until Ctrl-C")
    p.add_argument("user")
    p.add_argument("--device", default="cli-tail")
    p.add_argument("--json", action="store_true", help="one message JSON per line")
    p.add_argument("--count", type=int, help="exit after this many messages")
    p.add_argument("--url", help="web base URL (default: http://IMFLOW_HOST:IMFLOW_PORT)")
    p.set_defaults(func=_tail)

    p = sub.add_parser("stats", help="per agent and partition: committed offset, end offset, "
                       "lag, rate")
    p.add_argument("--json", action="store_true")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the two samples the rate is measured over")
    p.set_defaults(func=_stats)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
