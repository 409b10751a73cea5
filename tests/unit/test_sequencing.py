"""The sequencer's decisions (pure logic): seqs, retries, membership, read fan-out, and
the same log whatever the batches and aborted transactions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agents.sequencing import Decision, decide
from app.models import InboundMembers, InboundRecord, InboundSend, message_id_for
from tables.sequencer_state import Changes, ConvState, GroupState, dedup_key


def send(sender: str, conv: str, cmid: str, ts: int = 1000) -> InboundSend:
    return InboundSend(v=1, kind="send", conversation_id=conv, sender=sender,
                       client_msg_id=cmid, body={"text": cmid}, accepted_at=ts)


def members(actor: str, conv: str, op: str, who: list[str], eid: str) -> InboundMembers:
    return InboundMembers(v=1, kind="members", conversation_id=conv, actor=actor, op=op,
                          members=who, event_id=eid, accepted_at=1000)


NEVER = 10**9  # a read fan-out threshold no test group reaches


class Log:
    """One inbound partition and the sequencer state it has produced (a StateView)."""

    def __init__(self, read_threshold: int = NEVER) -> None:
        self.convs: dict[str, ConvState] = {}
        self.groups: dict[str, GroupState] = {}
        self.ids: set[bytes] = set()
        self.read_threshold = read_threshold

    def conversation(self, cid: str) -> ConvState | None:
        return self.convs.get(cid)

    def group(self, cid: str) -> GroupState | None:
        return self.groups.get(cid)

    def seen(self, event_id: str) -> bool:
        return dedup_key(event_id) in self.ids

    def commit(self, changes: Changes) -> None:
        self.convs.update(changes.convs)
        self.groups.update(changes.groups)
        self.ids.update(changes.seen)

    def apply(self, record: InboundRecord, offset: int) -> Decision:
        decision = decide(record, record_ts=0, state=self, read_threshold=self.read_threshold)
        changes = Changes(position=offset)
        decision.record_in(changes)
        self.commit(changes)
        return decision


def test_direct_messages_get_consecutive_seqs_and_both_users_receive() -> None:
    log = Log()
    outs = [log.apply(send("alice", "u:alice:bob", f"c{i}"), i).output for i in range(3)]
    assert [o.message.seq for o in outs if o] == [1, 2, 3]
    assert all(o is not None and o.recipients == ["alice", "bob"] for o in outs)


def test_client_retry_is_a_duplicate_and_keeps_the_first_id() -> None:
    log = Log()
    first = log.apply(send("alice", "u:alice:bob", "same"), 0)
    again = log.apply(send("alice", "u:alice:bob", "same"), 1)
    assert first.output is not None
    assert first.output.message.message_id == message_id_for("alice", "same")
    assert again.status == "duplicate" and again.output is None
    assert log.apply(send("alice", "u:alice:bob", "next"), 2).output.message.seq == 2  # type: ignore[union-attr]


def test_ts_never_goes_backwards_within_a_conversation() -> None:
    log = Log()
    a = log.apply(send("alice", "u:alice:bob", "a", ts=5000), 0).output
    b = log.apply(send("bob", "u:alice:bob", "b", ts=4000), 1).output
    assert a is not None and b is not None
    assert b.message.ts == 5000


def test_sender_outside_a_direct_conversation_is_rejected() -> None:
    decision = Log().apply(send("mallory", "u:alice:bob", "x"), 0)
    assert decision.status == "rejected" and "not in" in decision.reason
    assert decision.output is None


def test_group_membership_follows_the_log() -> None:
    log = Log()
    create = log.apply(members("alice", "g:team", "create", ["bob"], "e1"), 0).output
    assert create is not None and create.message.seq == 1
    m1 = log.apply(send("bob", "g:team", "m1"), 1).output
    log.apply(members("alice", "g:team", "add", ["carol"], "e2"), 2)
    m2 = log.apply(send("alice", "g:team", "m2"), 3).output
    removed = log.apply(members("alice", "g:team", "remove", ["bob"], "e3"), 4).output
    m3 = log.apply(send("alice", "g:team", "m3"), 5).output
    assert m1 is not None and m2 is not None and m3 is not None and removed is not None
    assert m1.recipients == ["alice", "bob"]
    assert sorted(m2.recipients) == ["alice", "bob", "carol"]
    assert "bob" in removed.recipients  # the removed member learns of it
    assert sorted(m3.recipients) == ["alice", "carol"]
    rejected = log.apply(send("bob", "g:team", "m4"), 6)
    assert rejected.status == "rejected" and "not a member" in rejected.reason


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (send("bob", "g:nope", "x"), "no such group"),
        (members("bob", "g:team", "add", ["x"], "e9"), "not the owner"),
        (members("alice", "g:team", "create", [], "e8"), "already exists"),
        (members("alice", "g:team", "remove", ["alice"], "e7"), "owner cannot be removed"),
    ],
)
def test_invalid_group_operations_are_rejected(record: InboundRecord, reason: str) -> None:
    log = Log()
    log.apply(members("alice", "g:team", "create", ["bob"], "e1"), 0)
    decision = log.apply(record, 1)
    assert decision.status == "rejected" and reason in decision.reason
    assert decision.output is None


def _workload(rng: random.Random, n: int) -> list[InboundRecord]:
    records: list[InboundRecord] = [members("alice", "g:g1", "create", ["bob"], "create")]
    sent: list[InboundSend] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.1 and sent:
            records.append(rng.choice(sent))  # a client retry
        elif roll < 0.35:
            op = rng.choice(["add", "remove"])
            records.append(members("alice", "g:g1", op, [rng.choice(["bob", "carol"])], f"e{i}"))
        else:
            sender = rng.choice(["alice", "bob", "carol"])
            conv = rng.choice(["u:alice:bob", "u:bob:carol", "g:g1", "g:g1"])
            records.append(send(sender, conv, f"m{i}", ts=1000 + i))
            sent.append(records[-1])  # type: ignore[arg-type]
    # bob and carol are in at a random point, so a group with a threshold of 2 switches
    # mid-log.
    records.insert(rng.randint(1, n // 2),
                   members("alice", "g:g1", "add", ["bob", "carol"], "join"))
    return records


def _batch(log: Log, records: list[InboundRecord], start: int) -> tuple[list[Any], Changes]:
    """Decide records as the agent decides one batch: each on the batch's own changes."""
    changes = Changes(position=start + len(records) - 1)
    view = changes.over(log)
    outputs = []
    for record in records:
        decision = decide(record, record_ts=0, state=view, read_threshold=log.read_threshold)
        decision.record_in(changes)
        if decision.output is not None:
            outputs.append(decision.output)
    return outputs, changes


@pytest.mark.parametrize("threshold", [NEVER, 2], ids=["write-fanout", "read-fanout-at-3"])
@pytest.mark.parametrize("seed", range(6))
def test_batches_of_any_size_and_aborted_batches_give_the_same_log(seed: int,
                                                                   threshold: int) -> None:
    """The agent commits a batch's outputs and state changes in one transaction; an
    aborted transaction is decided again from the state before it. Whatever the batch
    sizes and wherever transactions abort, the log must be the one a record-at-a-time run
    gives: the same record at every (conversation, seq), no seq skipped or given twice.
    With threshold 2 the group switches to read fan-out when carol first joins."""
    rng = random.Random(seed)
    records = _workload(rng, 40)
    one_at_a_time = Log(threshold)
    expected = [d.output for i, r in enumerate(records)
                if (d := one_at_a_time.apply(r, i)).output is not None]
    if threshold != NEVER:
        assert any(r.fanout == "read" for r in expected), "the workload never switched"
    log, got, start = Log(threshold), [], 0
    while start < len(records):
        size = rng.randint(1, 8)
        outputs, changes = _batch(log, records[start:start + size], start)
        if rng.random() < 0.3:  # the transaction aborted: the same batch is decided again
            again, changes = _batch(log, records[start:start + size], start)
            assert again == outputs
        log.commit(changes)
        got += outputs
        start += size
    assert got == expected
    for cid in {o.message.conversation_id for o in expected}:
        seqs = [o.message.seq for o in expected if o.message.conversation_id == cid]
        assert seqs == list(range(1, len(seqs) + 1))


def test_a_group_switches_to_read_fanout_past_the_threshold_and_stays_switched() -> None:
    log = Log(read_threshold=2)
    created = log.apply(members("alice", "g:big", "create", ["bob"], "e0"), 0).output
    small = log.apply(send("bob", "g:big", "small"), 1).output
    switch = log.apply(members("alice", "g:big", "add", ["carol"], "e2"), 2).output
    large = log.apply(send("bob", "g:big", "large"), 3).output
    joined = log.apply(members("alice", "g:big", "add", ["dave"], "e4"), 4).output
    shrunk = log.apply(members("alice", "g:big", "remove", ["bob", "carol"], "e5"), 5).output
    after = log.apply(send("dave", "g:big", "after"), 6).output
    assert created is not None and created.fanout == "write"
    assert small is not None and (small.fanout, small.recipients) == ("write", ["alice", "bob"])
    # The switching entry names every member: each one's span in the feed starts there.
    assert switch is not None and switch.fanout == "read"
    assert switch.recipients == ["alice", "bob", "carol"]
    assert large is not None and (large.fanout, large.recipients) == ("read", [])
    # Later membership changes name only the changed users.
    assert joined is not None and (joined.fanout, joined.recipients) == ("read", ["dave"])
    assert shrunk is not None and shrunk.recipients == ["bob", "carol"]
    # Sticky: two members left, still read fan-out (no flip-flopping around the threshold).
    assert after is not None and (after.fanout, after.message.seq) == ("read", 7)
