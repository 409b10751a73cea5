"""Push agent: each sequenced record to the online devices of its recipients.

Run: `faust -L uvloop -A agents.push worker --without-web`. Publishes on the per-user Redis
channels that web processes subscribe to for their connected devices. Push is
best effort on top of the inbox: a device that misses a push gets the message by sync.
"""

from __future__ import annotations

from agents.base import RedisService, SinkHandler, create_sink_app
from app.settings import get_settings
from app.stores.feeds import FeedStore
from app.stores.push import PushPublisher

settings = get_settings()
redis_service = RedisService(settings)


def handler() -> SinkHandler:
    client = redis_service.client
    feeds = FeedStore(client, retention_s=settings.inbox_retention_s)
    return PushPublisher(client, feed_wait_s=settings.feed_wait_s, feeds=feeds).publish


app = create_sink_app("push", settings, redis_service, handler)
