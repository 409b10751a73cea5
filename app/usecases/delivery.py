"""Offline delivery, as the inbox agent and `imflow replay --sinks inbox` both apply it.

Per batch of sequenced records: the group membership projection first (whoever sees an
event can act on it at once), then write fan-out records into each recipient's inbox and
read fan-out records into their group's feed (and the sender's read marker: replying
reads). Every step is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models import SequencedRecord
from app.stores.feeds import FeedStore
from app.stores.groups import GroupStore
from app.stores.inbox import InboxStore
from app.stores.redis_client import RedisClient


@dataclass(frozen=True)
class Delivered:
    expected: int  # inbox entries plus feed entries the batch asks for
    written: int  # of which were new (the rest were there already: a redelivery or replay)


class OfflineDelivery:
    def __init__(self, client: RedisClient, *, retention_s: int, replica_acks: int = 0) -> None:
        self.groups = GroupStore(client, replica_acks=replica_acks)
        self.inbox = InboxStore(client, retention_s=retention_s, replica_acks=replica_acks)
        self.feeds = FeedStore(client, retention_s=retention_s, replica_acks=replica_acks)

    async def apply(self, records: list[SequencedRecord]) -> Delivered:
        await self.groups.apply(records)
        fanout_on_write = [r for r in records if r.fanout == "write"]
        fanout_on_read = [r for r in records if r.fanout == "read"]
        written = 0
        if fanout_on_write:
            written += await self.inbox.deliver(fanout_on_write)
        if fanout_on_read:
            written += await self.feeds.append(fanout_on_read)
            await self.inbox.mark_sent_read(fanout_on_read)
        expected = sum(len(r.recipients) for r in fanout_on_write) + len(fanout_on_read)
        return Delivered(expected=expected, written=written)
