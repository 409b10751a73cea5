"""History agent: each sequenced record once into its conversation's HBase history (read fan-out).

Run: `faust -L uvloop -A agents.history worker --without-web`. Puts are batched and run in the
history store's bounded thread pool; while HBase is down the agent retries the same
batch and does not advance, so no offset past unstored records is committed.
"""

from __future__ import annotations

from agents.base import HistoryService, SinkHandler, create_sink_app
from app.models import SequencedRecord
from app.settings import get_settings

settings = get_settings()
history_service = HistoryService(settings)


def handler() -> SinkHandler:
    store = history_service.store

    async def write(records: list[SequencedRecord]) -> None:
        await store.write([r.message for r in records])

    return write


app = create_sink_app("history", settings, history_service, handler)
