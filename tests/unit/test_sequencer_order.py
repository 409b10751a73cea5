"""The sequencer applies a partition's records strictly in log order after its position:
a record past a gap waits until Kafka confirms the gap (in-process, with small fakes)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agents.sequencer import PartitionSequencer


class FakeOwner:
    """What a PartitionSequencer asks its Sequencer for: the log's real offsets, a seek."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets  # the committed records of inbound partition 0
        self.seeks: list[int] = []
        self.settings = SimpleNamespace(topic_inbound="inbound")
        self.app = SimpleNamespace(conf=SimpleNamespace(id="app"),
                                   consumer=SimpleNamespace(seek=self._seek))

    async def first_offset(self, partition: int, offset: int) -> int:
        return min(o for o in self.offsets if o >= offset)

    async def _seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)


def events(*offsets: int) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(offset=o)) for o in offsets]


async def in_order(owner: FakeOwner, position: int, *offsets: int) -> list[int]:
    sequencer = PartitionSequencer(0, owner)  # type: ignore[arg-type]
    accepted = await sequencer._in_order(events(*offsets), position)
    return [e.message.offset for e in accepted]


async def test_records_at_or_below_the_position_are_skipped() -> None:
    owner = FakeOwner(list(range(20)))
    assert await in_order(owner, 9, 8, 9, 10, 11) == [10, 11]
    assert owner.seeks == []


async def test_a_record_from_a_stale_fetch_position_rewinds_instead_of_skipping_ahead() -> None:
    """Records 10-14 exist but 15 arrives first (fetched from a stale position around a
    rebalance): nothing is applied and the consumer goes back to 10."""
    owner = FakeOwner(list(range(30)))
    assert await in_order(owner, 9, 15, 16, 10) == []
    assert owner.seeks == [10]
    assert await in_order(owner, 9, 10, 11, 15) == [10, 11]  # stops again at the next hole
    assert owner.seeks == [10, 12]


async def test_a_real_gap_is_crossed() -> None:
    """Offsets 10-11 hold an outside producer's transaction markers (or retention
    removed them): 12 is the next record, so it is applied."""
    owner = FakeOwner([*range(10), *range(12, 20)])
    assert await in_order(owner, 9, 12, 13, 14) == [12, 13, 14]
    assert owner.seeks == []


async def test_duplicate_copies_in_one_batch_are_applied_once() -> None:
    owner = FakeOwner(list(range(20)))
    assert await in_order(owner, 4, 5, 6, 5, 6, 7) == [5, 6, 7]
