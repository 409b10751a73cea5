"""The agents' Kafka consumer gets the fetch wait from settings, not Faust's fixed 1.5 s,
and reads committed records only (the sequencer writes in transactions)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError
from faust.types import TP

from agents.base import create_faust_app
from agents.transport import (
    BUSY_MIN_BYTES,
    ShortFetchConsumer,
    ShortFetchConsumerThread,
    ShortFetchTransport,
    pace_fetches,
    refresh_metadata_on_stale_leader,
)
from app.settings import Settings


async def test_agent_consumers_use_the_configured_fetch_wait(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, agent_fetch_max_wait_ms=77,
                        agent_round_ms=9, faust_data_dir=str(tmp_path))
    app = create_faust_app("fetch-wait", settings)
    assert isinstance(app.transport, ShortFetchTransport)
    assert app.transport.fetch_busy_wait_ms == 9
    sequencer = create_faust_app("fetch-wait-seq", settings, round_ms=21)
    assert cast(ShortFetchTransport, sequencer.transport).fetch_busy_wait_ms == 21
    thread = app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, ShortFetchConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 77
    assert consumer._isolation_level == "read_committed"


class _Record:
    """What `Consumer.ack` reads of a message."""

    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.offset, self.topic, self.acked = tp, offset, tp.topic, False


async def _consume(consumer: Any, tp: TP, visible: list[int], read: int | None) -> int | None:
    """Hand `visible` offsets to the consumer as Faust's fetch loop does (a gap is added
    when an offset skips past the last one read), ack each, return the commit offset."""
    for offset in visible:
        if read is not None and offset - read > 1:
            await consumer._add_gap(tp, read + 1, offset)
        read = offset
        assert consumer.ack(_Record(tp, offset))
    new_offset: int | None = consumer._new_offset(tp)
    return new_offset


@pytest.mark.parametrize("skipped", [
    [3, 6, 9],              # one commit marker after every few records
    [3, 4, 5, 6],           # an aborted batch and its abort marker
    [0, 1, 5, 6, 7, 8, 9],  # the partition starts with markers (a new sink's first read)
])
async def test_offsets_no_consumer_sees_do_not_hold_the_commit_back(
        tmp_path: Path, skipped: list[int]) -> None:
    app = create_faust_app("gaps", Settings(_env_file=None, faust_data_dir=str(tmp_path)))
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    consumer = cast(ShortFetchConsumer, app.consumer)
    tp = TP("imflow.messages", 0)
    visible = [o for o in range(12) if o not in skipped]
    # every record consumed and acked: the commit offset is the one after the last
    assert await _consume(consumer, tp, visible, None) == 12


async def test_a_commit_that_stops_at_a_marker_continues_past_it(tmp_path: Path) -> None:
    app = create_faust_app("gaps", Settings(_env_file=None, faust_data_dir=str(tmp_path)))
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    consumer = cast(ShortFetchConsumer, app.consumer)
    tp = TP("imflow.messages", 0)
    assert await _consume(consumer, tp, [0, 1, 2], None) == 3
    consumer._committed_offset[tp] = 3  # offset 3 is the transaction's commit marker
    assert await _consume(consumer, tp, [4, 5], 2) == 6
    consumer._committed_offset[tp] = 6
    # two transactions in a row: markers at 6 and 9
    assert await _consume(consumer, tp, [7, 8, 10, 11], 5) == 12


class _Client:
    def __init__(self) -> None:
        self.refreshes = 0

    def force_metadata_update(self) -> None:
        self.refreshes += 1


class _Fetcher:
    """Answers offset lookups from a script: an exception to raise, or offsets."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    async def _proc_offset_request(self, node_id: int, topic_data: Any) -> Any:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class _Consumer:
    def __init__(self, fetcher: _Fetcher) -> None:
        self._fetcher, self._client = fetcher, _Client()


async def test_a_stale_leader_in_an_offset_lookup_refreshes_the_metadata() -> None:
    tp = TP("t", 0)
    fetcher = _Fetcher([NotLeaderForPartitionError(tp), KafkaTimeoutError(),
                        {tp: (7, None)}])
    consumer = _Consumer(fetcher)
    refresh_metadata_on_stale_leader(cast(Any, consumer))
    with pytest.raises(NotLeaderForPartitionError):  # the fetcher still sees the error
        await fetcher._proc_offset_request(1, {"t": [(0, -1)]})
    assert consumer._client.refreshes == 1
    with pytest.raises(KafkaTimeoutError):  # not a metadata error: no refresh
        await fetcher._proc_offset_request(1, {"t": [(0, -1)]})
    assert consumer._client.refreshes == 1
    assert await fetcher._proc_offset_request(2, {"t": [(0, -1)]}) == {tp: (7, None)}
    assert consumer._client.refreshes == 1


async def test_a_gap_read_again_after_a_seek_does_not_hold_the_commit_back(
        tmp_path: Path) -> None:
    app = create_faust_app("gaps", Settings(_env_file=None, faust_data_dir=str(tmp_path)))
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    consumer = cast(ShortFetchConsumer, app.consumer)
    tp = TP("imflow.messages", 0)
    await consumer._add_gap(tp, 3, 4)  # a marker at 3, seen once ...
    assert await _consume(consumer, tp, [0, 1, 2, 4, 5], None) == 6  # ... and again
    assert consumer._acked[tp] == []  # nothing left over to hold a later commit back


async def test_a_long_run_of_markers_is_committed_past_in_one_step(tmp_path: Path) -> None:
    """A catching-up sink: a marker after every record, thousands between commits."""
    app = create_faust_app("gaps", Settings(_env_file=None, faust_data_dir=str(tmp_path)))
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    consumer = cast(ShortFetchConsumer, app.consumer)
    tp = TP("imflow.messages", 0)
    records = list(range(0, 20_000, 2))  # markers at every odd offset
    assert await _consume(consumer, tp, records, None) == 19_999


class _PacedFetcher:
    """aiokafka's Fetcher as `pace_fetches` sees it: each fetch request is built from
    `_fetch_min_bytes` and `_fetch_max_wait_ms`, then `_proc_fetch_request` sends it and
    says whether records came back."""

    def __init__(self, answers: list[bool]) -> None:
        self._fetch_min_bytes, self._fetch_max_wait_ms = 1, 100
        self._answers = answers
        self.requests: list[tuple[int, int]] = []

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        return self._answers.pop(0)

    async def fetch(self) -> bool:
        self.requests.append((self._fetch_min_bytes, self._fetch_max_wait_ms))
        return await self._proc_fetch_request(None, 1, None)


async def test_a_busy_consumer_fetches_in_rounds_and_an_idle_one_at_the_first_record() -> None:
    fetcher = _PacedFetcher([False, True, True, False, False])
    pace_fetches(cast(Any, SimpleNamespace(_fetcher=fetcher)), busy_wait_ms=10)
    for _ in range(5):
        await fetcher.fetch()
    idle, busy = (1, 100), (BUSY_MIN_BYTES, 10)
    assert fetcher.requests == [idle, idle, busy, busy, idle]
