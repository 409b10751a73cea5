"""Readiness probes used by the service scripts: exit 0 when the service answers.

kafka: a metadata request lists the brokers; hbase: happybase `tables()` over Thrift;
redis: PING. Ports come from the same IMFLOW_* variables the scripts use.
"""

from __future__ import annotations

import asyncio
import os
import sys


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _kafka() -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    port = _port("IMFLOW_KAFKA_PORT", 9092)
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        if not cluster.get("brokers"):
            raise RuntimeError("no brokers in metadata")
    finally:
        await admin.close()


def _hbase() -> None:
    import happybase

    port = _port("IMFLOW_HBASE_THRIFT_PORT", 9090)
    conn = happybase.Connection("127.0.0.1", port=port, timeout=5000)
    try:
        conn.tables()
    finally:
        conn.close()


def _redis() -> None:
    import redis

    port = _port("IMFLOW_REDIS_PORT", 6379)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    if not client.ping():
        raise RuntimeError("PING failed")


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) > 1 else ""
    try:
        if kind == "kafka":
            asyncio.run(_kafka())
        elif kind == "hbase":
            _hbase()
        elif kind == "redis":
            _redis()
        else:
            print("usage: probe.py kafka|hbase|redis", file=sys.stderr)
            return 2
    except Exception as exc:  # any failure means "not ready yet"
        print(f"{kind} not ready: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
