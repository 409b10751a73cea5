"""An agent's batches (agents/base.py EventBatches): the events of one fetch reach the
batch loop one by one, a turn of the event loop apart (Faust's consumer loop, the stream,
the feeder), and must still make one round, not a round per few events; a round never
waits for events that are not on their way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agents.base import EventBatches


class Stream:
    """What EventBatches reads: `noack().events()`, here fed by `fetch(n)`."""

    def __init__(self) -> None:
        self.fetched: asyncio.Queue[int] = asyncio.Queue()

    def noack(self) -> Stream:
        return self

    async def events(self) -> AsyncIterator[int]:
        while True:
            event = await self.fetched.get()
            await asyncio.sleep(0)  # Faust's stream yields to the loop per event
            yield event

    def fetch(self, events: range) -> None:
        for event in events:
            self.fetched.put_nowait(event)


async def test_the_events_of_one_fetch_make_one_batch() -> None:
    stream = Stream()
    batches = aiter(EventBatches(stream, max_batch=500))
    stream.fetch(range(20))
    assert await anext(batches) == list(range(20))
    stream.fetch(range(20, 23))
    assert await anext(batches) == [20, 21, 22]


async def test_a_batch_stops_at_the_maximum() -> None:
    stream = Stream()
    batches: Any = aiter(EventBatches(stream, max_batch=8))
    stream.fetch(range(20))
    assert [len(await anext(batches)) for _ in range(3)] == [8, 8, 4]


async def test_a_lone_event_is_handed_over_without_waiting_for_more() -> None:
    stream = Stream()
    batches = aiter(EventBatches(stream, max_batch=500))
    stream.fetch(range(1))
    assert await asyncio.wait_for(anext(batches), timeout=1) == [0]
