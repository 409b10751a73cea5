"""The sequencer's state: its typed schema, its local RocksDB store and its changelogs.

Per inbound partition the sequencer keeps
- each conversation's last `seq` and `ts` (`ConvState`),
- each group's membership (`GroupState`),
- the retry dedup window: the ids accepted in the last `dedup_window_s` (one day),
- its position: the last inbound offset whose effects are stored,
- its writer: the transactional id that alone may write the partition's next
  transactions (the claim, see agents/sequencer.py).

The state lives on local disk (RocksDB through rocksdict), so memory does not grow with
the window, and a restarted process resumes from its own files plus the changelog tail.
Every change is also logged, inside the same Kafka transaction as the sequenced records
it caused, to two topics of the inbound topic's partition count (see agents/sequencer.py):
- `<app id>-state` (compacted): one record per changed conversation or group, the
  position, and the writer's claim; the latest value of each key is the state.
- `<app id>-dedup` (time-retained, a little longer than the window): one record per
  transaction listing the ids it accepted. No tombstones are needed: Kafka drops whole
  segments once they are older than the window, and the local store drops expired ids by
  a time-ordered index (`LocalState.prune`), in proportion to what expires.

The local store applies a transaction's changes only after Kafka committed it, together
with the changelog offsets they came from, in one RocksDB write batch: the local state is
always a prefix of the committed changelog, so catching up from those offsets (after a
restart, a standby's lag, or a lost commit answer) converges to the committed state.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
)

# ------------------------------------------------------------------ the typed schema


@dataclass(frozen=True, slots=True)
class ConvState:
    """A conversation's last sequenced entry."""

    seq: int
    ts: int


@dataclass(frozen=True, slots=True)
class GroupState:
    """A group's membership after the last change in its log.

    `read_at` is the seq at which the group switched to read fan-out (None: write
    fan-out); the switch is sticky.
    """

    owner: str
    members: tuple[str, ...]  # sorted
    read_at: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({"owner": self.owner, "members": self.members,
                             "read_at": self.read_at})

    @classmethod
    def from_json(cls, raw: bytes) -> GroupState:
        data = orjson.loads(raw)
        return cls(data["owner"], tuple(data["members"]), data["read_at"])


class StateView(Protocol):
    """What the sequencer's decisions read (agents/sequencing.py)."""

    def conversation(self, cid: str) -> ConvState | None: ...

    def group(self, cid: str) -> GroupState | None: ...

    def seen(self, event_id: str) -> bool: ...


def dedup_key(event_id: str) -> bytes:
    """16 bytes per id: a message id is already 32 hex digits (a blake2b digest, see
    app/models.py); any other id (an outside producer's, a membership event's) is hashed."""
    if len(event_id) == 32:
        try:
            return bytes.fromhex(event_id)
        except ValueError:
            pass
    return hashlib.blake2b(event_id.encode(), digest_size=16).digest()


@dataclass
class Changes:
    """One partition's state changes of one transaction (a batch of inbound records)."""

    position: int  # the last inbound offset the batch covers
    convs: dict[str, ConvState] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)
    seen: dict[bytes, int] = field(default_factory=dict)  # dedup key -> ts (ms)

    def over(self, base: StateView) -> StateView:
        """The state as `base` plus these changes (a batch decides on its own writes)."""
        return _Overlay(base, self)


class _Overlay:
    def __init__(self, base: StateView, changes: Changes) -> None:
        self._base = base
        self._changes = changes

    def conversation(self, cid: str) -> ConvState | None:
        found = self._changes.convs.get(cid)
        return found if found is not None else self._base.conversation(cid)

    def group(self, cid: str) -> GroupState | None:
        found = self._changes.groups.get(cid)
        return found if found is not None else self._base.group(cid)

    def seen(self, event_id: str) -> bool:
        return dedup_key(event_id) in self._changes.seen or self._base.seen(event_id)


# ------------------------------------------------------------------ changelog records

STATE_CONV = b"conv:"
STATE_GROUP = b"group:"
STATE_POSITION = b"position"
STATE_WRITER = b"writer"
_DEDUP_ENTRY = struct.Struct(">16sQ")
_DEDUP_VERSION = b"\x01"


def state_records(changes: Changes) -> list[tuple[bytes, bytes]]:
    """The compacted state topic's records (key, value) for a transaction's changes."""
    records = [(STATE_CONV + cid.encode(), orjson.dumps([c.seq, c.ts]))
               for cid, c in changes.convs.items()]
    records += [(STATE_GROUP + cid.encode(), g.to_json()) for cid, g in changes.groups.items()]
    records.append((STATE_POSITION, orjson.dumps(changes.position)))
    return records


def writer_record(writer: str) -> tuple[bytes, bytes]:
    """The state topic's claim record (key, value): `writer` alone writes from here on."""
    return STATE_WRITER, writer.encode()


def dedup_record(changes: Changes) -> bytes | None:
    """The dedup topic's one record for a transaction: version byte + (id, ts) entries."""
    if not changes.seen:
        return None
    return _DEDUP_VERSION + b"".join(_DEDUP_ENTRY.pack(k, ts) for k, ts in changes.seen.items())


def parse_dedup_record(value: bytes) -> Iterator[tuple[bytes, int]]:
    if value[:1] != _DEDUP_VERSION:
        raise ValueError(f"unknown dedup record version {value[:1]!r}")
    body = memoryview(value)[1:]
    for key, ts in _DEDUP_ENTRY.iter_unpack(body):
        yield bytes(key), ts


# ------------------------------------------------------------------ the local store

# Local key layout, every key prefixed by the partition (2 bytes), so a partition's data
# can be dropped as one range:  c<cid> conv | g<cid> group | d<id16> dedup ts |
# t<ts:8><id16> the time index of the dedup window | o position | w writer | s/u the
# offsets of the state/dedup changelogs applied.
_P = struct.Struct(">H")
_Q = struct.Struct(">Q")
_q = struct.Struct(">q")
_CONV_VALUE = struct.Struct(">QQ")


def _prefix(partition: int) -> bytes:
    return _P.pack(partition)


@dataclass(frozen=True)
class StoreLimits:
    """RocksDB's memory: a bounded block cache (index and filter blocks included) and
    bounded memtables, whatever the number of keys."""

    block_cache_mb: int = 32
    write_buffer_mb: int = 8
    max_write_buffers: int = 3
    group_cache: int = 1024  # decoded GroupStates kept in Python (large member lists)


class LocalState:
    """The sequencer's on-disk state for every partition this process holds or follows."""

    def __init__(self, path: Path, limits: StoreLimits | None = None) -> None:
        self.path = path
        limits = limits or StoreLimits()
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Index and bloom filter blocks live in the bounded block cache, partitioned into
        # small blocks: whole-file filters of a large window (a megabyte each) thrashed a
        # small cache and made a miss cost 100 us instead of 2; unpartitioned and outside
        # the cache they would grow with the window (1.25 bytes per key).
        table = BlockBasedOptions()
        table.set_block_cache(Cache(limits.block_cache_mb << 20))
        table.set_bloom_filter(10, False)
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_size(limits.write_buffer_mb << 20)
        options.set_max_write_buffer_number(limits.max_write_buffers)
        options.set_max_open_files(256)
        options.set_keep_log_file_num(3)
        self._db = Rdict(str(path), options)
        self._groups: OrderedDict[bytes, GroupState] = OrderedDict()
        self._group_cache = limits.group_cache

    def close(self) -> None:
        self._db.close()

    # -- reads

    def view(self, partition: int) -> StateView:
        return _PartitionView(self, _prefix(partition))

    def _get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def _group(self, key: bytes) -> GroupState | None:
        cached = self._groups.get(key)
        if cached is not None:
            self._groups.move_to_end(key)
            return cached
        raw = self._get(key)
        if raw is None:
            return None
        group = GroupState.from_json(raw)
        self._remember_group(key, group)
        return group

    def _remember_group(self, key: bytes, group: GroupState) -> None:
        self._groups[key] = group
        self._groups.move_to_end(key)
        while len(self._groups) > self._group_cache:
            self._groups.popitem(last=False)

    def _int(self, key: bytes) -> int:
        raw = self._get(key)
        return -1 if raw is None else int(_q.unpack(raw)[0])

    def position(self, partition: int) -> int:
        """The last inbound offset whose effects are stored (-1: none)."""
        return self._int(_prefix(partition) + b"o")

    def writer(self, partition: int) -> str | None:
        """The transactional id that last claimed the partition (None: never claimed)."""
        raw = self._get(_prefix(partition) + b"w")
        return None if raw is None else raw.decode()

    def changelog_offsets(self, partition: int) -> tuple[int, int]:
        """The last offsets of the (state, dedup) changelogs applied here (-1: none)."""
        p = _prefix(partition)
        return self._int(p + b"s"), self._int(p + b"u")

    # -- writes

    def commit(self, partition: int, changes: Changes, *, state_offset: int,
               dedup_offset: int | None) -> None:
        """Apply a committed transaction's changes with the changelog offsets they got."""
        p = _prefix(partition)
        batch = WriteBatch(raw_mode=True)
        for cid, conv in changes.convs.items():
            batch.put(p + b"c" + cid.encode(), _CONV_VALUE.pack(conv.seq, conv.ts))
        for cid, group in changes.groups.items():
            key = p + b"g" + cid.encode()
            batch.put(key, group.to_json())
            self._remember_group(key, group)
        for key, ts in changes.seen.items():
            self._put_seen(batch, p, key, ts)
        batch.put(p + b"o", _q.pack(changes.position))
        batch.put(p + b"s", _q.pack(state_offset))
        if dedup_offset is not None:
            batch.put(p + b"u", _q.pack(dedup_offset))
        self._db.write(batch)

    @staticmethod
    def _put_seen(batch: WriteBatch, p: bytes, key: bytes, ts: int) -> None:
        batch.put(p + b"d" + key, _Q.pack(ts))
        batch.put(p + b"t" + _Q.pack(ts) + key, b"")

    def apply_state_log(self, partition: int,
                        records: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """Apply state changelog records (offset, key, value) read from Kafka."""
        p = _prefix(partition)
        batch = WriteBatch(raw_mode=True)
        last = None
        for offset, key, value in records:
            last = offset
            if value is None:
                continue  # no tombstones are written; ignore one from elsewhere
            if key.startswith(STATE_CONV):
                seq, ts = orjson.loads(value)
                batch.put(p + b"c" + key[len(STATE_CONV):], _CONV_VALUE.pack(seq, ts))
            elif key.startswith(STATE_GROUP):
                local = p + b"g" + key[len(STATE_GROUP):]
                batch.put(local, value)
                self._groups.pop(local, None)
            elif key == STATE_POSITION:
                batch.put(p + b"o", _q.pack(orjson.loads(value)))
            elif key == STATE_WRITER:
                batch.put(p + b"w", value)
        if last is not None:
            batch.put(p + b"s", _q.pack(last))
            self._db.write(batch)

    def apply_dedup_log(self, partition: int, records: Iterable[tuple[int, bytes | None]],
                        *, not_before_ms: int) -> None:
        """Apply dedup changelog records (offset, value); ids older than the window are
        skipped (the topic keeps them a little longer than the window)."""
        p = _prefix(partition)
        batch = WriteBatch(raw_mode=True)
        last = None
        for offset, value in records:
            last = offset
            for key, ts in parse_dedup_record(value or _DEDUP_VERSION):
                if ts >= not_before_ms:
                    self._put_seen(batch, p, key, ts)
        if last is not None:
            batch.put(p + b"u", _q.pack(last))
            self._db.write(batch)

    def forget_partition(self, partition: int) -> None:
        """Drop a partition's local copy (e.g. its changelog was recreated)."""
        p = _prefix(partition)
        self._db.delete_range(p, _prefix(partition + 1))
        self._groups = OrderedDict((k, v) for k, v in self._groups.items()
                                   if not k.startswith(p))

    def prune(self, partition: int, *, older_than_ms: int, limit: int) -> int:
        """Forget up to `limit` dedup ids older than `older_than_ms`; returns how many.
        Walks only the expired part of the time index, so it costs what it removes."""
        p = _prefix(partition)
        lower, upper = p + b"t", p + b"t" + _Q.pack(max(0, older_than_ms))
        options = ReadOptions()
        options.set_iterate_lower_bound(lower)
        options.set_iterate_upper_bound(upper)
        it = self._db.iter(options)
        it.seek(lower)
        batch = WriteBatch(raw_mode=True)
        removed = 0
        last: bytes | None = None
        while it.valid() and removed < limit:
            last = bytes(it.key())
            batch.delete(p + b"d" + last[len(p) + 9:])
            removed += 1
            it.next()
        del it
        if last is not None:
            batch.delete_range(lower, last + b"\x00")
            self._db.write(batch)
        return removed

    def dedup_entries(self, partition: int) -> int:
        """How many ids the window of a partition holds (a walk: for tests and tools)."""
        p = _prefix(partition)
        options = ReadOptions()
        options.set_iterate_lower_bound(p + b"d")
        options.set_iterate_upper_bound(p + b"e")
        it = self._db.iter(options)
        it.seek(p + b"d")
        count = 0
        while it.valid():
            count += 1
            it.next()
        return count

    @staticmethod
    def destroy(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)


class _PartitionView:
    """A StateView of one partition's committed state in the local store."""

    def __init__(self, store: LocalState, prefix: bytes) -> None:
        self._store = store
        self._c = prefix + b"c"
        self._g = prefix + b"g"
        self._d = prefix + b"d"

    def conversation(self, cid: str) -> ConvState | None:
        raw = self._store._get(self._c + cid.encode())
        if raw is None:
            return None
        seq, ts = _CONV_VALUE.unpack(raw)
        return ConvState(seq, ts)

    def group(self, cid: str) -> GroupState | None:
        return self._store._group(self._g + cid.encode())

    def seen(self, event_id: str) -> bool:
        return self._store._get(self._d + dedup_key(event_id)) is not None


def now_ms() -> int:
    return int(time.time() * 1000)
