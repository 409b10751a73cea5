"""The sequencer's rounds in-process: a round's outputs and state (each partition's
position among them) commit in one transaction for all of its partitions, and only then
are its events handed back for Faust to commit their offsets; a transaction that fails
between its sends is redone from the committed state by a new writer that claimed the
partitions again (fencing the old one), so every message gets exactly one seq, in log
order; a claim fences the writer the changelog names. Small fakes of Kafka's
transactions and the changelog reader; the real local store."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.sequencer import Sequencer
from app.errors import Fenced, StoreUnavailable
from app.models import direct_conversation, encode_batch, encode_send, parse_sequenced_items
from app.stores.kafka import Write, partition_of
from tables.sequencer_state import LocalState, writer_record

MESSAGES, STATE, DEDUP, DEAD = "messages", "state", "dedup", "dead"
PARTITIONS = 2  # of the inbound topic, for the batch items' partition check


class FakeKafka:
    """Committed records by (topic, partition), each with its offset, and every
    transactional id's current epoch (a producer of an older epoch is fenced)."""

    def __init__(self) -> None:
        self.committed: list[tuple[str, int, int, bytes | None, bytes]] = []
        self.epochs: dict[str, int] = {}
        self.fenced: list[str] = []
        self.transactions: list[list[Write]] = []
        self.fail_on_topic: str | None = None
        self._next: dict[tuple[str, int], int] = {}

    def init(self, transactional_id: str) -> int:
        self.epochs[transactional_id] = self.epochs.get(transactional_id, 0) + 1
        return self.epochs[transactional_id]

    def append(self, writes: list[Write]) -> list[int]:
        got = []
        for w in writes:
            where = (w.topic, w.partition or 0)
            got.append(self._next.get(where, 0))
            self._next[where] = got[-1] + 1
            self.committed.append((w.topic, w.partition or 0, got[-1], w.key, w.value))
        self.transactions.append(writes)
        return got


class FakeTransactions:
    """A transactional producer (app.stores.kafka.Transactions): the writes of a
    transaction become visible only when all succeed, and never once fenced."""

    def __init__(self, kafka: FakeKafka, transactional_id: str) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.epoch = kafka.init(transactional_id)
        self.closed = False

    async def commit(self, writes: list[Write]) -> list[int]:
        assert not self.closed, "a closed producer must not be used"
        if self.kafka.epochs[self.transactional_id] != self.epoch:
            raise Fenced(f"{self.transactional_id} epoch {self.epoch}")
        for w in writes:
            if self.kafka.fail_on_topic == w.topic:
                self.kafka.fail_on_topic = None
                raise StoreUnavailable(f"broker connection lost while sending to {w.topic}")
        return self.kafka.append(writes)

    async def close(self) -> None:
        self.closed = True


class FakeFollower:
    """The changelog reader: applies what Kafka committed to the local store."""

    state_topic, dedup_topic = STATE, DEDUP

    def __init__(self, kafka: FakeKafka, store: LocalState) -> None:
        self.kafka, self.store = kafka, store
        self.standby: set[int] = set()

    async def partitions(self) -> set[int]:
        return set(range(PARTITIONS))

    def follow(self, standby: set[int]) -> None:
        self.standby = set(standby)

    async def catch_up(self, partition: int) -> float:
        applied_state, applied_dedup = self.store.changelog_offsets(partition)
        self.store.apply_state_log(partition, [
            (offset, key or b"", value) for t, p, offset, key, value in self.kafka.committed
            if t == STATE and p == partition and offset > applied_state])
        self.store.apply_dedup_log(partition, [
            (offset, value) for t, p, offset, _, value in self.kafka.committed
            if t == DEDUP and p == partition and offset > applied_dedup], not_before_ms=0)
        return 0.0


class InProcessSequencer(Sequencer):
    """The real rounds and claims over the fakes."""

    def __init__(self, kafka: FakeKafka, store: LocalState) -> None:
        app = SimpleNamespace(
            conf=SimpleNamespace(id="seq"), consumer_generation_id=1,
            on_partitions_revoked=SimpleNamespace(connect=lambda receiver: None),
            on_partitions_assigned=SimpleNamespace(connect=lambda receiver: None),
            consumer=SimpleNamespace(seek=self._seek))
        settings = SimpleNamespace(
            topic_inbound="inbound", topic_messages=MESSAGES, topic_dead_letter=DEAD,
            max_body_bytes=64 * 1024, read_fanout_threshold=100,
            agent_heartbeat_interval_s=0.01, agent_session_timeout_s=0.05,
            sequencer_request_timeout_s=5.0, record_batch_max_bytes=512 * 1024)
        super().__init__(app, settings)  # type: ignore[arg-type]
        self.kafka = kafka
        self._store = store
        self._follower = FakeFollower(kafka, store)  # type: ignore[assignment]
        self._inbound_partitions = PARTITIONS
        self.seeks: list[int] = []
        self.writers: list[FakeTransactions] = []

    async def _seek(self, tp: Any, offset: int) -> None:
        self.seeks.append(offset)

    async def new_producer(self, transactional_id: str) -> FakeTransactions:  # type: ignore[override]
        producer = FakeTransactions(self.kafka, transactional_id)
        if "-w-" in transactional_id:
            self.writers.append(producer)
        return producer

    async def fence(self, transactional_id: str) -> None:
        self.kafka.init(transactional_id)
        self.kafka.fenced.append(transactional_id)

    async def first_offset(self, partition: int, offset: int) -> int:
        return offset  # the fake log has every offset: no gap is real

    async def take_over(self, generation: int, partitions: set[int]) -> None:
        self.app.consumer_generation_id = generation
        self._mine, self._generation = partitions, generation
        await self._take_over(generation)

def send_value(sender: str, to: str, n: int) -> bytes:
    return encode_send(direct_conversation(sender, to), sender, f"c{n}",
                       body_json=str(n).encode(), accepted_at=1_000 + n)


def inbound(offset: int, sender: str, to: str, n: int) -> Any:
    return record_at(offset, send_value(sender, to, n), direct_conversation(sender, to))


def record_at(offset: int, value: bytes, key: str | None = None, *, partition: int = 0,
              generation: int = 1) -> Any:
    return SimpleNamespace(message=SimpleNamespace(
        offset=offset, value=value, key=key.encode() if key else None,
        timestamp=1.0 + offset, partition=partition, topic="inbound",
        generation_id=generation))


def sequenced(kafka: FakeKafka) -> list[tuple[str, int, Any]]:
    out = [item.record.message for t, _, _, _, v in kafka.committed if t == MESSAGES
           for item in parse_sequenced_items(v) if item.record is not None]
    return [(m.conversation_id, m.seq, m.body) for m in out]


def dead_letters(kafka: FakeKafka) -> list[dict[str, Any]]:
    return [orjson.loads(v) for t, _, _, _, v in kafka.committed if t == DEAD]


def users_in(partition: int, count: int) -> list[str]:
    """Peers of "a" whose one-to-one chat with "a" is on `partition`."""
    peers = (f"u{i}" for i in range(1000))
    return [u for u in peers
            if partition_of(direct_conversation("a", u).encode(), PARTITIONS) == partition
            ][:count]


@pytest.fixture
async def sequencer(tmp_path: Path) -> InProcessSequencer:
    sequencer = InProcessSequencer(FakeKafka(), LocalState(tmp_path / "state"))
    await sequencer.take_over(1, {0, 1})
    return sequencer


def offsets(events: list[Any]) -> list[int]:
    return [e.message.offset for e in events]


async def test_a_round_commits_its_outputs_and_state_together_then_hands_its_events_back(
        sequencer: InProcessSequencer) -> None:
    kafka = sequencer.kafka
    claims = len(kafka.transactions)
    done = await sequencer.process([inbound(0, "a", "b", 0), inbound(1, "b", "a", 1),
                                    inbound(2, "a", "c", 2)])
    assert sequenced(kafka) == [("u:a:b", 1, 0), ("u:a:b", 2, 1), ("u:a:c", 1, 2)]
    (round_,) = kafka.transactions[claims:]  # one transaction: outputs, state, dedup
    assert {w.topic for w in round_} == {MESSAGES, STATE, DEDUP}
    assert sequencer.store.position(0) == 2
    assert offsets(done) == [0, 1, 2]  # Faust may commit inbound offset 3 now


async def test_a_round_of_two_partitions_is_one_transaction(
        sequencer: InProcessSequencer) -> None:
    kafka = sequencer.kafka
    (b,), (c,) = users_in(0, 1), users_in(1, 1)
    claims = len(kafka.transactions)
    done = await sequencer.process([
        record_at(0, send_value("a", b, 0), direct_conversation("a", b), partition=0),
        record_at(0, send_value("a", c, 1), direct_conversation("a", c), partition=1),
        record_at(1, send_value(c, "a", 2), direct_conversation("a", c), partition=1)])
    (round_,) = kafka.transactions[claims:]
    assert {(w.topic, w.partition) for w in round_ if w.topic != DEAD} == {
        (t, p) for t in (MESSAGES, STATE, DEDUP) for p in (0, 1)}
    assert (sequencer.store.position(0), sequencer.store.position(1)) == (0, 1)
    assert sorted(offsets(done)) == [0, 0, 1]


@pytest.mark.parametrize("failing", [STATE, DEDUP, MESSAGES])
async def test_a_transaction_failing_between_its_sends_is_redone_once_by_a_new_writer(
        sequencer: InProcessSequencer, failing: str) -> None:
    kafka = sequencer.kafka
    await sequencer.process([inbound(0, "a", "b", 0), inbound(1, "a", "b", 1)])
    kafka.fail_on_topic = failing
    done = await sequencer.process([inbound(2, "a", "b", 2), inbound(3, "b", "a", 3)])
    assert sequenced(kafka) == [("u:a:b", s, s - 1) for s in (1, 2, 3, 4)]
    first, second = sequencer.writers
    assert first.transactional_id in kafka.fenced  # fenced by the claims for the second
    assert sequencer.store.writer(0) == sequencer.store.writer(1) == second.transactional_id
    assert sequencer.store.position(0) == 3
    assert offsets(done) == [2, 3]


async def test_a_claim_fences_the_writer_the_changelog_names(tmp_path: Path) -> None:
    kafka = FakeKafka()
    key, value = writer_record("seq-w-paused")  # a process that owned partition 1 before
    kafka.append([Write(STATE, key, value, 1)])
    sequencer = InProcessSequencer(kafka, LocalState(tmp_path / "state"))
    await sequencer.take_over(1, {0, 1})
    (writer,) = sequencer.writers
    assert kafka.fenced == ["seq-w-paused"]
    assert sequencer.store.writer(0) == sequencer.store.writer(1) == writer.transactional_id
    assert kafka.epochs["seq-p0"] == kafka.epochs["seq-p1"] == 1  # each claim's producer


async def test_a_writer_fenced_by_another_claim_commits_nothing(
        sequencer: InProcessSequencer) -> None:
    """Another process claimed a partition (fencing this writer) and no rebalance came:
    the round is redone by a new writer only after the claims (which read what the
    other process committed), so no seq is given twice."""
    kafka = sequencer.kafka
    await sequencer.process([inbound(0, "a", "b", 0)])
    (writer,) = sequencer.writers
    kafka.init(writer.transactional_id)  # the other process's claim fenced it
    done = await sequencer.process([inbound(1, "a", "b", 1)])
    assert sequenced(kafka) == [("u:a:b", 1, 0), ("u:a:b", 2, 1)]
    assert len(sequencer.writers) == 2
    assert offsets(done) == [1]


async def test_a_redelivered_batch_is_not_sequenced_again(
        sequencer: InProcessSequencer) -> None:
    batch = [inbound(0, "a", "b", 0), inbound(1, "a", "b", 1)]
    await sequencer.process(batch)
    again = await sequencer.process(batch)  # e.g. fetched again after a rebalance
    assert sequenced(sequencer.kafka) == [("u:a:b", 1, 0), ("u:a:b", 2, 1)]
    assert offsets(again) == [0, 1]  # done already: their offsets may be committed


async def test_events_past_a_gap_that_is_not_real_are_not_handed_back(
        sequencer: InProcessSequencer) -> None:
    """Records 2-4 exist (the fake's log has every offset), so 5 and 6 came from a stale
    fetch position: the consumer is rewound to 2, and the group must not commit past 1."""
    done = await sequencer.process([inbound(0, "a", "b", 0), inbound(1, "a", "b", 1),
                                    inbound(5, "a", "b", 5), inbound(6, "a", "b", 6)])
    assert sequencer.seeks == [2]
    assert sequencer.store.position(0) == 1
    assert offsets(done) == [0, 1]


async def test_a_batch_fetched_before_a_rebalance_is_not_sequenced(
        sequencer: InProcessSequencer) -> None:
    """The consumer moved to generation 2; the partitions were claimed for 1 only."""
    sequencer.app.consumer_generation_id = 2
    done = await sequencer.process([record_at(0, send_value("a", "b", 0), "u:a:b",
                                              generation=1)])
    assert sequenced(sequencer.kafka) == []
    assert done == []  # its offset must not be committed: it comes again


async def test_a_batch_record_is_sequenced_in_its_order_into_one_messages_record(
        sequencer: InProcessSequencer) -> None:
    b, c = users_in(0, 2)
    batch = encode_batch([send_value("a", b, 0), send_value(b, "a", 1), send_value("a", c, 2)])
    await sequencer.process([record_at(0, batch)])
    ab, ac = direct_conversation("a", b), direct_conversation("a", c)
    assert sequenced(sequencer.kafka) == [(ab, 1, 0), (ab, 2, 1), (ac, 1, 2)]
    messages = [(k, v) for t, _, _, k, v in sequencer.kafka.committed if t == MESSAGES]
    assert len(messages) == 1 and messages[0][0] is None  # one batch record, no key
    assert orjson.loads(messages[0][1])["kind"] == "batch"
    assert sequencer.store.position(0) == 0


async def test_a_poison_message_inside_a_batch_is_dead_lettered_alone(
        sequencer: InProcessSequencer) -> None:
    b, c = users_in(0, 2)
    (elsewhere,) = users_in(1, 1)
    poison = b'{"v":1,"kind":"send","conversation_id":"u:a:' + b.encode() + b'"}'
    batch = encode_batch([send_value("a", b, 0), poison, send_value("a", elsewhere, 2),
                          b"[1]", send_value("a", c, 4)])
    await sequencer.process([record_at(0, batch)])
    ab, ac = direct_conversation("a", b), direct_conversation("a", c)
    assert sequenced(sequencer.kafka) == [(ab, 1, 0), (ac, 1, 4)]
    letters = dead_letters(sequencer.kafka)
    assert [(d["partition"], d["offset"], d["index"]) for d in letters] == [
        (0, 0, 1), (0, 0, 2), (0, 0, 3)]
    assert "invalid field sender" in letters[0]["reason"]
    assert orjson.loads(letters[0]["value"]) == orjson.loads(poison)  # the item, not the batch
    assert "belongs to another partition" in letters[1]["reason"]
    assert letters[2]["value"] == "[1]"


async def test_a_single_bad_record_is_dead_lettered_whole_without_an_index(
        sequencer: InProcessSequencer) -> None:
    await sequencer.process([record_at(0, b"not json", "u:a:b"), inbound(1, "a", "b", 1)])
    assert sequenced(sequencer.kafka) == [("u:a:b", 1, 1)]
    (letter,) = dead_letters(sequencer.kafka)
    assert (letter["offset"], letter["index"], letter["value"]) == (0, None, "not json")
