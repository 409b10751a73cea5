"""The sequencer's batch loop in-process: a batch's outputs, its state and its inbound
offset commit in one transaction; a transaction that fails between its sends is redone
from the committed state by a new (fencing) producer, so every message gets exactly one
seq, in log order. Small fakes of the producer and the changelog; the real local store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.sequencer import PartitionSequencer
from app.errors import StoreUnavailable
from app.models import direct_conversation, encode_send, parse_sequenced
from app.stores.kafka import Write
from tables.sequencer_state import LocalState

MESSAGES, STATE, DEDUP = "messages", "state", "dedup"


class FakeTransactions:
    """A partition's transactional writer (app.stores.kafka.PartitionTransactions): the
    writes of a transaction become visible (`log.committed`) only when all succeed."""

    def __init__(self, log: SimpleNamespace) -> None:
        self.log = log
        self.stopped = False

    async def commit(self, writes: list[Write], offsets: dict[tuple[str, int], int],
                     group_id: str) -> list[int]:
        assert not self.stopped, "a closed (fenced) producer must not be used"
        got: list[int] = []
        counts: dict[str, int] = {}
        for w in writes:
            if self.log.fail_on_topic == w.topic:
                self.log.fail_on_topic = None
                raise StoreUnavailable(f"broker connection lost while sending to {w.topic}")
            counts[w.topic] = counts.get(w.topic, 0) + 1
            got.append(self.log.next_offset.get(w.topic, 0) + counts[w.topic] - 1)
        for w in writes:
            self.log.committed.append((w.topic, w.key, w.value))
            self.log.next_offset[w.topic] = self.log.next_offset.get(w.topic, 0) + 1
        self.log.inbound_committed.update(offsets)
        return got

    async def close(self) -> None:
        self.stopped = True


class FakeOwner:
    """What a PartitionSequencer asks of its Sequencer."""

    def __init__(self, store: LocalState) -> None:
        self.store = store
        self.log = SimpleNamespace(committed=[], next_offset={}, inbound_committed={},
                                   fail_on_topic=None, producers=[])
        self.settings = SimpleNamespace(
            topic_inbound="inbound", topic_messages=MESSAGES, topic_dead_letter="dead",
            max_body_bytes=64 * 1024, read_fanout_threshold=100,
            agent_heartbeat_interval_s=0.01, agent_session_timeout_s=1.0,
            sequencer_request_timeout_s=5.0)
        self.follower = SimpleNamespace(state_topic=STATE, dedup_topic=DEDUP,
                                        catch_up=self._catch_up)
        self.app = SimpleNamespace(conf=SimpleNamespace(id="seq"), consumer_generation_id=1)
        self.sequenced = 0

    async def _catch_up(self, partition: int) -> float:
        return 0.0  # nothing was committed by another process

    async def new_producer(self, transactional_id: str) -> FakeTransactions:
        for earlier in self.log.producers:
            earlier.stopped = True  # the new producer id fences every earlier one
        producer = FakeTransactions(self.log)
        self.log.producers.append(producer)
        return producer

    async def first_offset(self, partition: int, offset: int) -> int:
        return offset


def inbound(offset: int, sender: str, to: str, n: int) -> Any:
    value = encode_send(direct_conversation(sender, to), sender, f"c{n}",
                        body_json=str(n).encode(), accepted_at=1_000 + n)
    return SimpleNamespace(message=SimpleNamespace(
        offset=offset, value=value, key=direct_conversation(sender, to).encode(),
        timestamp=1.0 + n, partition=0, topic="inbound"))


def sequenced(owner: FakeOwner) -> list[tuple[str, int, Any]]:
    out = [parse_sequenced(v).message for t, _, v in owner.log.committed if t == MESSAGES]
    return [(m.conversation_id, m.seq, m.body) for m in out]


@pytest.fixture
async def partition(tmp_path: Path) -> tuple[PartitionSequencer, FakeOwner]:
    store = LocalState(tmp_path / "state")
    owner = FakeOwner(store)
    sequencer = PartitionSequencer(0, owner)  # type: ignore[arg-type]
    await sequencer.take_over(1)
    return sequencer, owner


async def test_a_batch_commits_its_outputs_state_and_offset_together(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    await sequencer.sequence([inbound(0, "a", "b", 0), inbound(1, "b", "a", 1),
                              inbound(2, "a", "c", 2)], 1)
    assert sequenced(owner) == [("u:a:b", 1, 0), ("u:a:b", 2, 1), ("u:a:c", 1, 2)]
    topics = [t for t, _, _ in owner.log.committed]
    assert STATE in topics and DEDUP in topics  # in the same transaction as the outputs
    assert list(owner.log.inbound_committed.values()) == [3]  # the next inbound offset
    assert owner.store.position(0) == 2


@pytest.mark.parametrize("failing", [STATE, DEDUP, MESSAGES])
async def test_a_transaction_failing_between_its_sends_is_redone_once(
        partition: tuple[PartitionSequencer, FakeOwner], failing: str) -> None:
    sequencer, owner = partition
    await sequencer.sequence([inbound(0, "a", "b", 0), inbound(1, "a", "b", 1)], 1)
    owner.log.fail_on_topic = failing
    await sequencer.sequence([inbound(2, "a", "b", 2), inbound(3, "b", "a", 3)], 1)
    assert sequenced(owner) == [("u:a:b", s, s - 1) for s in (1, 2, 3, 4)]
    assert len(owner.log.producers) == 2 and owner.log.producers[0].stopped  # re-fenced
    assert list(owner.log.inbound_committed.values()) == [4]
    assert owner.store.position(0) == 3


async def test_a_redelivered_batch_is_not_sequenced_again(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    batch = [inbound(0, "a", "b", 0), inbound(1, "a", "b", 1)]
    await sequencer.sequence(batch, 1)
    await sequencer.sequence(batch, 1)  # e.g. fetched again after a rebalance
    assert sequenced(owner) == [("u:a:b", 1, 0), ("u:a:b", 2, 1)]


async def test_a_batch_fetched_before_a_rebalance_is_not_sequenced(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    """The consumer moved to generation 2; the partition was taken over for 1 only."""
    sequencer, owner = partition
    owner.app.consumer_generation_id = 2
    await sequencer.sequence([inbound(0, "a", "b", 0)], 1)
    assert sequenced(owner) == []
