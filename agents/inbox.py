"""Inbox agent: each sequenced record into every recipient's Redis inbox stream (write fan-out).

Run: `faust -L uvloop -A agents.inbox worker --without-web`. Idempotent (see app/stores/inbox.py),
so redelivery after a crash or a replay never doubles an entry. It also keeps the Redis
projection of group membership (app/stores/groups.py) that the web reads, and the feeds
of large groups (read fan-out, app/stores/feeds.py). See app/stores/delivery.py.
"""

from __future__ import annotations

from agents.base import RedisService, SinkHandler, create_sink_app
from app.models import SequencedRecord
from app.settings import get_settings
from app.stores.delivery import OfflineDelivery

settings = get_settings()
redis_service = RedisService(settings)


def handler() -> SinkHandler:
    delivery = OfflineDelivery(redis_service.client, retention_s=settings.inbox_retention_s)

    async def deliver(records: list[SequencedRecord]) -> None:
        await delivery.apply(records)

    return deliver


app = create_sink_app("inbox", settings, redis_service, handler)
