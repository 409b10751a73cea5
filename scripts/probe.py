"""Readiness probes used by the service scripts: exit 0 when the service answers.

kafka [PORT [BROKERS]]: a metadata request lists at least BROKERS brokers (default 1);
hbase: happybase `tables()` over Thrift; redis [PORT]: PING, and on a cluster node
CLUSTER INFO says the cluster is ok. Ports default to the IMFLOW_* variables the
scripts use.
"""

from __future__ import annotations

import asyncio
import os
import sys


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


async def _kafka(port: int, brokers: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        listed = len(cluster.get("brokers") or [])
        if listed < brokers:
            raise RuntimeError(f"{listed} of {brokers} brokers in metadata")
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


def _redis(port: int) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    if not client.ping():
        raise RuntimeError("PING failed")
    if client.info("cluster").get("cluster_enabled"):
        info = client.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            raise RuntimeError(f"cluster not ok: {text.splitlines()[:1]}")


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) > 1 else ""
    args = [int(a) for a in argv[2:]]
    try:
        if kind == "kafka":
            port = args[0] if args else _port("IMFLOW_KAFKA_PORT", 9092)
            asyncio.run(_kafka(port, args[1] if len(args) > 1 else 1))
        elif kind == "hbase":
            _hbase()
        elif kind == "redis":
            _redis(args[0] if args else _port("IMFLOW_REDIS_PORT", 6379))
        else:
            print("usage: probe.py kafka [PORT [BROKERS]] | hbase | redis [PORT]", file=sys.stderr)
            return 2
    except Exception as exc:  # any failure means "not ready yet"
        print(f"{kind} not ready: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
