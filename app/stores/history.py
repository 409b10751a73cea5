"""Conversation history in HBase (`imflow:history`), one row per message.

Row key = 2-hex-digit hash prefix of the conversation (spreads conversations over
pre-split regions) + conversation id + `|` + reversed zero-padded seq, so a forward scan
from a conversation's prefix reads newest first. Column family `m` keeps one version
and has the retention as TTL; `m:j` holds the message JSON and `m:t` its ts, padded so
a binary comparison orders it (for `before_ts`).

happybase is blocking: every call runs in a bounded thread pool, one Thrift connection
per thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import happybase
import orjson
from thriftpy2.thrift import TException

from app.errors import StoreUnavailable
from app.models import SequencedRecord
from app.settings import Settings

FAMILY = b"m"
COL_JSON = b"m:j"
COL_TS = b"m:t"
MAX_SEQ = 10**16 - 1
T = TypeVar("T")


def conversation_prefix(cid: str) -> str:
    bucket = hashlib.blake2b(cid.encode(), digest_size=1).hexdigest()
    return f"{bucket}{cid}|"


def row_key(cid: str, seq: int) -> bytes:
    return f"{conversation_prefix(cid)}{MAX_SEQ - seq:016d}".encode()


@dataclass(frozen=True)
class HistoryPage:
    messages: list[dict[str, Any]]
    has_more: bool
    next_before: int | None


class HistoryStore:
    """Owns the HBase history table: batched idempotent writes and backwards pages."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: happybase.ConnectionPool | None = None  # made on first use, in a worker
        self._pool_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.hbase_pool_size, thread_name_prefix="hbase"
        )
        self._table = settings.hbase_table_name.encode()

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _connection_pool(self) -> happybase.ConnectionPool:
        # happybase connects when a pool is built; doing it lazily lets a process start
        # (and report "not ready") while HBase is still down.
        with self._pool_lock:
            if self._pool is None:
                s = self._settings
                self._pool = happybase.ConnectionPool(
                    size=s.hbase_pool_size, host=s.hbase_host, port=s.hbase_port,
                    timeout=s.hbase_timeout_ms,
                )
            return self._pool

    async def _run(self, fn: Callable[[happybase.Connection], T]) -> T:
        def call() -> T:
            with self._connection_pool().connection() as conn:
                return fn(conn)

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except (OSError, TException) as exc:
            raise StoreUnavailable(f"HBase: {exc!r}") from exc

    async def ping(self) -> None:
        await self._run(lambda conn: conn.tables())

    async def write(self, records: list[SequencedRecord]) -> None:
        """Put every record's message row (its JSON as read from the log); rewriting a
        row is harmless (idempotent)."""
        if not records:
            return
        rows = [
            (row_key(r.message.conversation_id, r.message.seq),
             {COL_JSON: r.message_json, COL_TS: f"{r.message.ts:015d}".encode()})
            for r in records
        ]

        def put_all(conn: happybase.Connection) -> None:
            table = conn.table(self._table)
            with table.batch(batch_size=1000) as batch:
                for key, data in rows:
                    batch.put(key, data)

        await self._run(put_all)

    async def page(
        self, cid: str, *, before: int | None, before_ts: int | None, limit: int
    ) -> HistoryPage:
        """Messages with seq < before (or ts < before_ts), newest first, and whether more."""
        if before is not None and before <= 1:
            return HistoryPage(messages=[], has_more=False, next_before=None)
        prefix = conversation_prefix(cid).encode()
        start = prefix if before is None else row_key(cid, before - 1)
        stop = prefix[:-1] + b"}"  # the byte after "|" ends this conversation's rows
        row_filter = None
        if before_ts is not None:
            row_filter = (
                f"SingleColumnValueFilter('m', 't', <, 'binary:{before_ts:015d}', true, true)"
            )

        def scan(conn: happybase.Connection) -> list[bytes]:
            table = conn.table(self._table)
            return [
                data[COL_JSON]
                for _, data in table.scan(
                    row_start=start, row_stop=stop, filter=row_filter,
                    columns=[COL_JSON, COL_TS], limit=limit + 1, batch_size=limit + 1,
                )
            ]

        raw = await self._run(scan)
        has_more = len(raw) > limit
        messages = [orjson.loads(v) for v in raw[:limit]]
        next_before = messages[-1]["seq"] if has_more and messages else None
        return HistoryPage(messages=messages, has_more=has_more, next_before=next_before)


def ensure_table(settings: Settings) -> bool:
    """Create the history table if missing, pre-split into `hbase_regions` regions
    (blocking; used by `imflow init`)."""
    made = _create_table(settings)
    if settings.hbase_regions > 1:
        split_table(settings)
    return made


def split_table(settings: Settings) -> None:
    """Split the history table on the row key's hash prefix (idempotent). Thrift1 has no
    split call: the project's HBase script runs HBase's Java admin client for it."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "hbase.sh"
    done = subprocess.run(["bash", str(script), "split", settings.hbase_table_name,
                           str(settings.hbase_regions)], capture_output=True, text=True)
    if done.returncode != 0:
        raise StoreUnavailable(f"splitting {settings.hbase_table_name} into "
                               f"{settings.hbase_regions} regions failed: {done.stderr[-2000:]}")


def _create_table(settings: Settings) -> bool:
    conn = happybase.Connection(settings.hbase_host, port=settings.hbase_port,
                                timeout=settings.hbase_timeout_ms)
    try:
        name = settings.hbase_table_name.encode()
        if name in conn.tables():
            return False
        conn.create_table(
            name,
            {FAMILY.decode(): {"max_versions": 1,
                               "time_to_live": settings.history_retention_s}},
        )
        return True
    finally:
        conn.close()
