"""Push agent: each sequenced record to the online devices of its recipients.

Run: `faust -A agents.push worker --without-web`. Publishes on the per-user Redis
channels that web processes subscribe to for their connected devices. Push is
best effort on top of the inbox: a device that misses a push gets the message by sync.
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
from app.stores.push import PushPublisher

settings = get_settings()
app = create_faust_app("push", settings)
redis_service = RedisService(settings)
app.add_dependency(redis_service)
messages_topic = topic(app, settings.topic_messages)
dead_letters = DeadLetters(app, settings)


@app.agent(messages_topic)
async def push_to_devices(stream: Any) -> None:
    publisher = PushPublisher(redis_service.client)

    async for records in sequenced_batches(stream, settings, dead_letters):
        if records:
            await retry_forever("push publish", partial(publisher.publish, list(records)))
