"""Group membership as the web reads it: a Redis projection of the membership events.

The sequencer's Faust table is the authority (it decides in log order, G4). The inbox
agent applies each membership event here, in seq order and idempotently, before the
event reaches anyone's inbox; the web reads it to answer 403/404 early and to list
members, and waits on a per-event ack to answer group changes once they took effect.
"""

from __future__ import annotations

from typing import cast

from app.models import SequencedRecord
from app.stores import keys, scripts
from app.stores.redis_client import RedisClient, redis_store, run_script

ACK_TTL_S = 300


@redis_store
class GroupStore:
    def __init__(self, client: RedisClient, *, replica_acks: int = 0) -> None:
        self._redis = client
        self._replica_acks = replica_acks  # sinks' writes wait for replicas (run_script)

    async def apply(self, records: list[SequencedRecord]) -> None:
        """Apply the membership events among `records` (idempotent), then ack each one."""
        events = [r.message for r in records if r.kind == "members"]
        await run_script(self._redis, scripts.APPLY_MEMBERS, [
            ([keys.group(m.conversation_id), keys.members(m.conversation_id)],
             [m.seq, m.body["op"], m.body["owner"], *m.body["members"]]) for m in events],
            replica_acks=self._replica_acks)
        if events:
            async with self._redis.pipeline(transaction=False) as pipe:
                for msg in events:
                    pipe.lpush(keys.applied_ack(msg.message_id), msg.seq)
                    pipe.expire(keys.applied_ack(msg.message_id), ACK_TTL_S)
                await pipe.execute()

    async def restore(self, groups: list[tuple[str, int, str, list[str]]]) -> int:
        """Write (conversation, seq, owner, members) snapshots where the projection is
        older than `seq` or missing; how many were written. Membership events after the
        snapshot then apply on top of it (their seqs are higher)."""
        written = await run_script(self._redis, scripts.RESTORE_MEMBERS, [
            ([keys.group(cid), keys.members(cid)], [seq, owner, *members])
            for cid, seq, owner, members in groups], replica_acks=self._replica_acks)
        return sum(int(n) for n in written)

    async def wait_applied(self, event_id: str, timeout_s: float) -> int | None:
        """The seq of the membership event once applied, or None after `timeout_s`."""
        item = await self._redis.blpop([keys.applied_ack(event_id)], timeout=timeout_s)
        if item is None:
            return None
        await self._redis.lpush(keys.applied_ack(event_id), item[1])  # keep it for other waiters
        return int(item[1])

    async def owner(self, cid: str) -> str | None:
        value = cast(bytes | None, await self._redis.hget(keys.group(cid), "owner"))
        return value.decode() if value is not None else None

    async def is_member(self, cid: str, user: str) -> bool:
        return bool(await self._redis.sismember(keys.members(cid), user))  # type: ignore[misc]

    async def members(self, cid: str) -> list[str]:
        raw = cast(set[bytes], await self._redis.smembers(keys.members(cid)))  # type: ignore[misc]
        return sorted(m.decode() for m in raw)
