"""Rebuild the group membership projection (Redis) from the sequencer's own state (in
tables/: it reads the changelog format that tables/sequencer_state.py owns).

`imflow replay` rebuilds Redis from `imflow.messages`, which keeps 8 days: a group whose
creation and membership changes are older than that would be lost with a wiped Redis.
The sequencer's compacted state changelog (tables/sequencer_state.py) holds every group's
current membership whatever its age, with its conversation's last seq: this reads it to
its committed end and writes each group's snapshot at that seq (`GroupStore.restore`),
so it is idempotent and never moves a group back behind what the inbox agent applied.

Read fan-out groups' member spans (`spans:{user}`) are a projection of the feed itself
and are not rebuilt here.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.errors import StoreUnavailable
from app.settings import Settings
from app.stores.groups import GroupStore
from app.stores.kafka import CLIENT_ERRORS, topic_partitions
from app.stores.redis_client import create_redis
from tables.sequencer_state import STATE_CONV, STATE_GROUP, GroupState

EMPTY_POLLS_AT_END = 3  # whole polls with nothing fetched: what is left are markers


@dataclass(frozen=True)
class GroupsRebuilt:
    records: int  # changelog records read
    groups: int  # groups found
    written: int  # of which the projection lacked or had older


async def rebuild_groups(settings: Settings) -> GroupsRebuilt:
    groups, last_seq, records = await _read_state(settings)
    redis = create_redis(settings)
    try:
        store = GroupStore(redis, replica_acks=settings.redis_replica_acks)
        snapshot = [(cid, last_seq.get(cid, 1), g.owner, list(g.members))
                    for cid, g in sorted(groups.items())]
        written = 0
        for start in range(0, len(snapshot), 500):
            written += await store.restore(snapshot[start:start + 500])
    finally:
        await redis.aclose()
    return GroupsRebuilt(records=records, groups=len(groups), written=written)


async def _read_state(settings: Settings) -> tuple[dict[str, GroupState], dict[str, int], int]:
    """Every group's latest state and every conversation's last seq, as committed."""
    topic = settings.sequencer_state_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, isolation_level="read_committed",
                                client_id=f"{settings.app_prefix}-groups-rebuild")
    groups: dict[str, GroupState] = {}
    last_seq: dict[str, int] = {}
    records = 0
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in sorted(await topic_partitions(settings, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # read_committed: the last stable offsets
        pending = {tp for tp in tps if ends[tp] > 0}
        idle = 0  # polls in a row that fetched nothing from any pending partition
        while pending and idle < EMPTY_POLLS_AT_END:
            fetched = await consumer.getmany(*pending, timeout_ms=200, max_records=5000)
            idle = 0 if any(fetched.values()) else idle + 1
            for batch in fetched.values():
                for record in batch:
                    records += 1
                    key, value = record.key or b"", record.value
                    if value is None:
                        continue
                    if key.startswith(STATE_GROUP):
                        groups[key[len(STATE_GROUP):].decode()] = GroupState.from_json(value)
                    elif key.startswith(STATE_CONV):
                        last_seq[key[len(STATE_CONV):].decode()] = int(orjson.loads(value)[0])
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        # Left pending after idle polls: nothing more to fetch below their ends, only
        # transaction markers (a read_committed reader never gets those).
    except CLIENT_ERRORS as exc:
        raise StoreUnavailable(f"reading {topic}: {exc!r}") from exc
    finally:
        await consumer.stop()
    return groups, last_seq, records
