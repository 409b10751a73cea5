"""Inbox agent: each sequenced record into every recipient's Redis inbox stream (write fan-out).

Run: `faust -A agents.inbox worker --without-web`. Idempotent (see app/stores/inbox.py),
so redelivery after a crash or a replay never doubles an entry. It also keeps the Redis
projection of group membership (app/stores/groups.py) that the web reads.
"""

from __future__ import annotations

from agents.base import RedisService, SinkHandler, create_sink_app
from app.models import SequencedRecord
from app.settings import get_settings
from app.stores.groups import GroupStore
from app.stores.inbox import InboxStore

settings = get_settings()
redis_service = RedisService(settings)


def handler() -> SinkHandler:
    inbox = InboxStore(redis_service.client, retention_s=settings.inbox_retention_s)
    groups = GroupStore(redis_service.client)

    async def deliver(records: list[SequencedRecord]) -> None:
        # Membership first: whoever sees the event in their inbox can act on it at once.
        await groups.apply(records)
        await inbox.deliver(records)

    return deliver


app = create_sink_app("inbox", settings, redis_service, handler)
