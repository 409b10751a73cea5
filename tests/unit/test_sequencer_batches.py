"""The sequencer's batch loop in-process: a batch's outputs and its state (its inbound
position among it) commit in one transaction, and only then are its events handed back
for Faust to commit their offsets; a transaction that fails between its sends is redone
from the committed state by a new (fencing) producer, so every message gets exactly one
seq, in log order. Small fakes of the producer and the changelog; the real local store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.sequencer import PartitionSequencer
from app.errors import StoreUnavailable
from app.models import direct_conversation, encode_batch, encode_send, parse_sequenced_items
from app.stores.kafka import Write, partition_of
from tables.sequencer_state import LocalState

MESSAGES, STATE, DEDUP = "messages", "state", "dedup"
PARTITIONS = 2  # of the inbound topic, for the batch items' partition check


class FakeTransactions:
    """A partition's transactional writer (app.stores.kafka.PartitionTransactions): the
    writes of a transaction become visible (`log.committed`) only when all succeed."""

    def __init__(self, log: SimpleNamespace) -> None:
        self.log = log
        self.stopped = False

    async def commit(self, writes: list[Write]) -> list[int]:
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
        return got

    async def close(self) -> None:
        self.stopped = True


class FakeOwner:
    """What a PartitionSequencer asks of its Sequencer."""

    def __init__(self, store: LocalState) -> None:
        self.store = store
        self.log = SimpleNamespace(committed=[], next_offset={}, fail_on_topic=None,
                                   producers=[])
        self.settings = SimpleNamespace(
            topic_inbound="inbound", topic_messages=MESSAGES, topic_dead_letter="dead",
            max_body_bytes=64 * 1024, read_fanout_threshold=100,
            agent_heartbeat_interval_s=0.01, agent_session_timeout_s=1.0,
            sequencer_request_timeout_s=5.0, record_batch_max_bytes=512 * 1024)
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

    def owns(self, partition: int, record: Any) -> bool:
        return partition_of(record.conversation_id.encode(), PARTITIONS) == partition


def send_value(sender: str, to: str, n: int) -> bytes:
    return encode_send(direct_conversation(sender, to), sender, f"c{n}",
                       body_json=str(n).encode(), accepted_at=1_000 + n)


def inbound(offset: int, sender: str, to: str, n: int) -> Any:
    return record_at(offset, send_value(sender, to, n), direct_conversation(sender, to))


def record_at(offset: int, value: bytes, key: str | None = None) -> Any:
    return SimpleNamespace(message=SimpleNamespace(
        offset=offset, value=value, key=key.encode() if key else None,
        timestamp=1.0 + offset, partition=0, topic="inbound"))


def sequenced(owner: FakeOwner) -> list[tuple[str, int, Any]]:
    out = [item.record.message for t, _, v in owner.log.committed if t == MESSAGES
           for item in parse_sequenced_items(v) if item.record is not None]
    return [(m.conversation_id, m.seq, m.body) for m in out]


def dead_letters(owner: FakeOwner) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _, v in owner.log.committed if t == "dead"]


def users_in(partition: int, count: int) -> list[str]:
    """Peers of "a" whose one-to-one chat with "a" is on `partition`."""
    peers = (f"u{i}" for i in range(1000))
    return [u for u in peers
            if partition_of(direct_conversation("a", u).encode(), PARTITIONS) == partition
            ][:count]


@pytest.fixture
async def partition(tmp_path: Path) -> tuple[PartitionSequencer, FakeOwner]:
    store = LocalState(tmp_path / "state")
    owner = FakeOwner(store)
    sequencer = PartitionSequencer(0, owner)  # type: ignore[arg-type]
    await sequencer.take_over(1)
    return sequencer, owner


def offsets(events: list[Any]) -> list[int]:
    return [e.message.offset for e in events]


async def test_a_batch_commits_its_outputs_and_state_together_then_hands_its_events_back(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    done = await sequencer.sequence([inbound(0, "a", "b", 0), inbound(1, "b", "a", 1),
                                     inbound(2, "a", "c", 2)], 1)
    assert sequenced(owner) == [("u:a:b", 1, 0), ("u:a:b", 2, 1), ("u:a:c", 1, 2)]
    topics = [t for t, _, _ in owner.log.committed]
    assert STATE in topics and DEDUP in topics  # in the same transaction as the outputs
    assert owner.store.position(0) == 2
    assert offsets(done) == [0, 1, 2]  # Faust may commit inbound offset 3 now


@pytest.mark.parametrize("failing", [STATE, DEDUP, MESSAGES])
async def test_a_transaction_failing_between_its_sends_is_redone_once(
        partition: tuple[PartitionSequencer, FakeOwner], failing: str) -> None:
    sequencer, owner = partition
    await sequencer.sequence([inbound(0, "a", "b", 0), inbound(1, "a", "b", 1)], 1)
    owner.log.fail_on_topic = failing
    done = await sequencer.sequence([inbound(2, "a", "b", 2), inbound(3, "b", "a", 3)], 1)
    assert sequenced(owner) == [("u:a:b", s, s - 1) for s in (1, 2, 3, 4)]
    assert len(owner.log.producers) == 2 and owner.log.producers[0].stopped  # re-fenced
    assert owner.store.position(0) == 3
    assert offsets(done) == [2, 3]


async def test_a_redelivered_batch_is_not_sequenced_again(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    batch = [inbound(0, "a", "b", 0), inbound(1, "a", "b", 1)]
    await sequencer.sequence(batch, 1)
    again = await sequencer.sequence(batch, 1)  # e.g. fetched again after a rebalance
    assert sequenced(owner) == [("u:a:b", 1, 0), ("u:a:b", 2, 1)]
    assert offsets(again) == [0, 1]  # done already: their offsets may be committed


async def test_events_past_a_gap_that_is_not_real_are_not_handed_back(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    """Records 2-4 exist (the fake's log has every offset), so 5 and 6 came from a stale
    fetch position: the consumer is rewound to 2, and the group must not commit past 1."""
    sequencer, owner = partition
    seeks: list[int] = []

    async def seek(tp: Any, offset: int) -> None:
        seeks.append(offset)
    owner.app.consumer = SimpleNamespace(seek=seek)  # type: ignore[attr-defined]
    done = await sequencer.sequence([inbound(0, "a", "b", 0), inbound(1, "a", "b", 1),
                                     inbound(5, "a", "b", 5), inbound(6, "a", "b", 6)], 1)
    assert seeks == [2]
    assert owner.store.position(0) == 1
    assert offsets(done) == [0, 1]


async def test_a_batch_fetched_before_a_rebalance_is_not_sequenced(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    """The consumer moved to generation 2; the partition was taken over for 1 only."""
    sequencer, owner = partition
    owner.app.consumer_generation_id = 2
    done = await sequencer.sequence([inbound(0, "a", "b", 0)], 1)
    assert sequenced(owner) == []
    assert done == []  # its offset must not be committed: it comes again


async def test_a_batch_record_is_sequenced_in_its_order_into_one_messages_record(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    b, c = users_in(0, 2)
    batch = encode_batch([send_value("a", b, 0), send_value(b, "a", 1), send_value("a", c, 2)])
    await sequencer.sequence([record_at(0, batch)], 1)
    ab, ac = direct_conversation("a", b), direct_conversation("a", c)
    assert sequenced(owner) == [(ab, 1, 0), (ab, 2, 1), (ac, 1, 2)]
    messages = [(k, v) for t, k, v in owner.log.committed if t == MESSAGES]
    assert len(messages) == 1 and messages[0][0] is None  # one batch record, no key
    assert orjson.loads(messages[0][1])["kind"] == "batch"
    assert owner.store.position(0) == 0


async def test_a_poison_message_inside_a_batch_is_dead_lettered_alone(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    b, c = users_in(0, 2)
    (elsewhere,) = users_in(1, 1)
    poison = b'{"v":1,"kind":"send","conversation_id":"u:a:' + b.encode() + b'"}'
    batch = encode_batch([send_value("a", b, 0), poison, send_value("a", elsewhere, 2),
                          b"[1]", send_value("a", c, 4)])
    await sequencer.sequence([record_at(0, batch)], 1)
    ab, ac = direct_conversation("a", b), direct_conversation("a", c)
    assert sequenced(owner) == [(ab, 1, 0), (ac, 1, 4)]
    letters = dead_letters(owner)
    assert [(d["partition"], d["offset"], d["index"]) for d in letters] == [
        (0, 0, 1), (0, 0, 2), (0, 0, 3)]
    assert "invalid field sender" in letters[0]["reason"]
    assert orjson.loads(letters[0]["value"]) == orjson.loads(poison)  # the item, not the batch
    assert "belongs to another partition" in letters[1]["reason"]
    assert letters[2]["value"] == "[1]"


async def test_a_single_bad_record_is_dead_lettered_whole_without_an_index(
        partition: tuple[PartitionSequencer, FakeOwner]) -> None:
    sequencer, owner = partition
    await sequencer.sequence([record_at(0, b"not json", "u:a:b"), inbound(1, "a", "b", 1)], 1)
    assert sequenced(owner) == [("u:a:b", 1, 1)]
    (letter,) = dead_letters(owner)
    assert (letter["offset"], letter["index"], letter["value"]) == (0, None, "not json")
