"""History agent: each sequenced record once into its conversation's HBase history (read fan-out).

Run: `faust -A agents.history worker --without-web`. Puts are batched and run in the
history store's bounded thread pool; while HBase is down the agent retries the same
batch and does not advance, so no offset past unstored records is committed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from agents.base import (
    DeadLetters,
    HistoryService,
    create_faust_app,
    retry_forever,
    sequenced_batches,
    topic,
)
from app.settings import get_settings

settings = get_settings()
app = create_faust_app("history", settings)
history_service = HistoryService(settings)
app.add_dependency(history_service)
messages_topic = topic(app, settings.topic_messages)
dead_letters = DeadLetters(app, settings)


@app.agent(messages_topic)
async def append_to_history(stream: Any) -> None:
    store = history_service.store
    async for records in sequenced_batches(stream, settings, dead_letters):
        messages = [r.message for r in records]
        if messages:
            await retry_forever("history write", partial(store.write, messages))
