"""Inbox agent: each sequenced record into every recipient's Redis inbox stream (write fan-out).

Run: `faust -A agents.inbox worker --without-web`. Idempotent (see app/stores/inbox.py),
so redelivery after a crash or a replay never doubles an entry.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from agents.base import (
    DeadLetters,
    RedisService,
    create_faust_app,
    retry_forever,
    sequenced_batches,
    topic,
)
from app.settings import get_settings
from app.stores.groups import GroupStore
from app.stores.inbox import InboxStore

settings = get_settings()
app = create_faust_app("inbox", settings)
redis_service = RedisService(settings)
app.add_dependency(redis_service)
messages_topic = topic(app, settings.topic_messages)
dead_letters = DeadLetters(app, settings)


@app.agent(messages_topic)
async def fan_out_to_inboxes(stream: Any) -> None:
    store = InboxStore(redis_service.client, retention_s=settings.inbox_retention_s)
    groups = GroupStore(redis_service.client)

    async for records in sequenced_batches(stream, settings, dead_letters):
        if records:
            # Membership first: whoever sees the event in their inbox can act on it at once.
            await retry_forever("group projection", partial(groups.apply, list(records)))
            await retry_forever("inbox deliver", partial(store.deliver, list(records)))
