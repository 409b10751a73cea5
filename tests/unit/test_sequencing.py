"""The sequencer's decisions, including recovery from a crash at every point (pure logic)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agents.sequencing import CONV, Decision, decide
from app.models import InboundMembers, InboundRecord, InboundSend, message_id_for


def send(sender: str, conv: str, cmid: str, ts: int = 1000) -> InboundSend:
    return InboundSend(v=1, kind="send", conversation_id=conv, sender=sender,
                       client_msg_id=cmid, body={"text": cmid}, accepted_at=ts)


def members(actor: str, conv: str, op: str, who: list[str], eid: str) -> InboundMembers:
    return InboundMembers(v=1, kind="members", conversation_id=conv, actor=actor, op=op,
                          members=who, event_id=eid, accepted_at=1000)


NEVER = 10**9  # a read fan-out threshold no test group reaches


class Log:
    """One inbound partition and the sequencer state it has produced."""

    def __init__(self, read_threshold: int = NEVER) -> None:
        self.state: dict[str, Any] = {}
        self.read_threshold = read_threshold

    def apply(self, record: InboundRecord, offset: int) -> Decision:
        decision = decide(record, partition=0, offset=offset, record_ts=0, get=self.state.get,
                          read_threshold=self.read_threshold)
        for key, value in decision.writes:
            self.state[key] = value
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
    # carol joins at a random point, so a group with a threshold of 2 switches mid-log.
    records.insert(rng.randint(1, n // 2), members("alice", "g:g1", "add", ["carol"], "join"))
    return records


def _run(records: list[InboundRecord], state: dict[str, Any], start: int,
         outputs: dict[tuple[str, int], Any], flush: int | None = None,
         threshold: int = NEVER) -> None:
    """Process records[start:]; with `flush`, only the first `flush` state writes persist."""
    writes: list[tuple[str, Any]] = []
    view = dict(state)
    for offset in range(start, len(records)):
        d = decide(records[offset], partition=0, offset=offset, record_ts=0, get=view.get,
                   read_threshold=threshold)
        if d.output is not None:
            key = (d.output.message.conversation_id, d.output.message.seq)
            previous = outputs.setdefault(key, d.output)
            assert previous == d.output, f"two different records at {key}"
        for k, v in d.writes:
            view[k] = v
            writes.append((k, v))
    for k, v in writes[:flush]:
        state[k] = v


@pytest.mark.parametrize("threshold", [NEVER, 2], ids=["write-fanout", "read-fanout-at-3"])
@pytest.mark.parametrize("seed", range(6))
def test_recovery_from_a_crash_after_any_prefix_of_state_writes(seed: int,
                                                                threshold: int) -> None:
    """Every crash point, every committed offset before it, every flushed prefix of the
    state writes (outputs are acked first): the restarted worker must emit exactly what a
    run without a crash emits. No (conv, seq) may get two different records, no seq may be
    skipped, every accepted record must be emitted. With threshold 2 the group switches to
    read fan-out when carol first joins, so the switch is crashed at too."""
    records = _workload(random.Random(seed), 20)
    clean: dict[tuple[str, int], Any] = {}
    _run(records, {}, 0, clean, threshold=threshold)
    if threshold != NEVER:
        assert any(r.fanout == "read" for r in clean.values()), "the workload never switched"

    for crash_at in range(1, len(records) + 1):
        for committed in range(crash_at + 1):
            state: dict[str, Any] = {}
            outputs: dict[tuple[str, int], Any] = {}
            _run(records[:committed], state, 0, outputs, threshold=threshold)
            n_writes = _count_writes(records[:crash_at], state, committed, threshold)
            for flushed in range(n_writes + 1):
                state_after_crash, outs = dict(state), dict(outputs)
                _run(records[:crash_at], state_after_crash, committed, outs, flush=flushed,
                     threshold=threshold)
                _run(records, state_after_crash, committed, outs, threshold=threshold)
                assert outs == clean, (crash_at, committed, flushed)


def _count_writes(records: list[InboundRecord], state: dict[str, Any], start: int,
                  threshold: int = NEVER) -> int:
    count, view = 0, dict(state)
    for offset in range(start, len(records)):
        d = decide(records[offset], partition=0, offset=offset, record_ts=0, get=view.get,
                   read_threshold=threshold)
        for k, v in d.writes:
            view[k] = v
            count += 1
    return count


def test_repair_when_dedup_entry_was_flushed_but_conversation_entry_was_not() -> None:
    log = Log()
    record = send("alice", "u:alice:bob", "x")
    d = decide(record, partition=0, offset=7, record_ts=0, get=log.state.get,
               read_threshold=NEVER)
    dedup_key, dedup_value = d.writes[0]
    log.state[dedup_key] = dedup_value  # the crash kept only the dedup write
    again = log.apply(record, 7)
    assert again.status == "repaired" and again.output is None
    assert log.state[CONV + "u:alice:bob"]["seq"] == 1


def test_a_rejection_is_not_rejudged_against_a_later_membership_after_a_crash() -> None:
    """bob is removed, sends (rejected), is added back; the crash kept only the add's
    membership write. Re-reading bob's send must reject it again, not give it a seq."""
    records: list[InboundRecord] = [
        members("alice", "g:team", "create", ["bob"], "e0"),
        members("alice", "g:team", "remove", ["bob"], "e1"),
        send("bob", "g:team", "while-removed"),
        members("alice", "g:team", "add", ["bob"], "e3"),
    ]
    clean: dict[tuple[str, int], Any] = {}
    _run(records, {}, 0, clean)
    state: dict[str, Any] = {}
    outputs: dict[tuple[str, int], Any] = {}
    _run(records[:2], state, 0, outputs)  # committed: offsets 0 and 1
    n_writes = _count_writes(records, state, 2)
    _run(records, state, 2, outputs, flush=n_writes - 2)  # the add's dedup+conv writes lost
    _run(records, state, 2, outputs)
    assert outputs == clean
    assert [r.message.client_msg_id for r in clean.values()] == ["e0", "e1", "e3"]


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
