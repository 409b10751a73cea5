"""A bounded load of chat traffic with retrying clients, and the exactly-once audit.

Clients behave as a chat app should: each message has a client_msg_id; on a 5xx, a
timeout or a dropped connection the client retries the same id (on another web process
if it has one) until it is acked. The audit then checks every acked message against the
stores: exactly once in each recipient's inbox and in history, seqs gap-free.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from app.devstack import Stack
from app.models import direct_conversation
from app.settings import Settings
from app.stores.feeds import FeedStore
from app.stores.history import HistoryStore
from app.stores.inbox import InboxStore
from app.stores.redis_client import create_redis
from app.usecases.sync import SyncCursor, read_page
from tests.support.topics import committed_values

REQUEST_TIMEOUT_S = 5.0


@dataclass
class Traffic:
    """Who talks to whom: direct pairs and groups (conversation -> members)."""

    conversations: dict[str, list[str]] = field(default_factory=dict)
    senders: list[tuple[str, str]] = field(default_factory=list)  # (user, conversation)

    @classmethod
    def build(cls, tag: str, *, pairs: int, groups: int, group_size: int) -> Traffic:
        traffic = cls()
        for i in range(pairs):
            a, b = f"a{i}-{tag}", f"b{i}-{tag}"
            cid = direct_conversation(a, b)
            traffic.conversations[cid] = sorted([a, b])
            traffic.senders += [(a, cid), (b, cid)]
        for j in range(groups):
            members = [f"g{j}m{k}-{tag}" for k in range(group_size)]
            cid = f"g:grp{j}-{tag}"
            traffic.conversations[cid] = members
            traffic.senders += [(members[0], cid), (members[1], cid)]
        return traffic

    @property
    def users(self) -> set[str]:
        return {u for members in self.conversations.values() for u in members}


@dataclass
class LoadResult:
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (cid, sender)
    attempts: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)  # error codes of the refusals
    slowest_error_s: float = 0.0
    started: float = 0.0
    ended: float = 0.0


async def create_groups(stack: Stack, session: aiohttp.ClientSession, traffic: Traffic) -> None:
    for cid, members in traffic.conversations.items():
        if not cid.startswith("g:"):
            continue
        headers = {"Authorization": f"Bearer {stack.token(members[0])}"}
        body = {"group_id": cid[2:], "members": members[1:]}
        async with session.post(stack.web_urls[0] + "/v1/groups", json=body,
                                headers=headers) as resp:
            assert resp.status == 201, await resp.text()


async def run_load(stack: Stack, traffic: Traffic, *, rate: float, duration_s: float,
                   result: LoadResult | None = None, give_up_after_s: float = 120) -> LoadResult:
    """Each sender sends at rate/len(senders) msg/s for `duration_s`, retrying until acked.

    Pass `result` to watch the acked messages while the load runs.
    """
    urls = stack.web_urls
    result = result if result is not None else LoadResult()
    result.started = time.monotonic()
    per_sender_interval = len(traffic.senders) / rate
    deadline = result.started + duration_s
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def sender(index: int, user: str, cid: str, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {stack.token(user)}"}
        web = itertools.cycle(range(index, index + len(urls)))
        url = urls[next(web) % len(urls)]
        next_send = result.started + (index % 10) * per_sender_interval / 10
        for n in itertools.count():
            if next_send >= deadline:
                return
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
            next_send += per_sender_interval
            body = {"conversation": cid, "client_msg_id": f"{user}-{n}", "body": n}
            give_up = time.monotonic() + give_up_after_s
            while True:
                result.attempts += 1
                began = time.monotonic()
                try:
                    async with session.post(url + "/v1/messages", json=body, headers=headers,
                                            timeout=timeout) as resp:
                        answer = await resp.json(content_type=None)
                        if resp.status == 202:
                            result.acked[answer["message_id"]] = (cid, user)
                            break
                        result.errors[f"http {resp.status}"] += 1
                        if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
                            result.codes[str(answer["error"].get("code"))] += 1
                        if resp.status in (429, 503) and "Retry-After" not in resp.headers:
                            result.errors[f"{resp.status} without Retry-After"] += 1
                        result.slowest_error_s = max(result.slowest_error_s,
                                                     time.monotonic() - began)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    result.errors[type(exc).__name__] += 1
                    url = urls[next(web) % len(urls)]  # fail over to another web process
                if time.monotonic() > give_up:
                    raise AssertionError(f"{user} could not send {body} for {give_up_after_s}s")
                result.retries += 1
                await asyncio.sleep(0.2)

    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(sender(i, user, cid, session)
                               for i, (user, cid) in enumerate(traffic.senders)))
    result.ended = time.monotonic()
    return result


@dataclass
class Audit:
    acked: int
    inbox_lost: int
    inbox_duplicated: int
    inbox_out_of_order: int
    history_lost: int
    history_duplicated: int
    history_gaps: int

    @property
    def clean(self) -> bool:
        return not (self.inbox_lost or self.inbox_duplicated or self.inbox_out_of_order
                    or self.history_lost or self.history_duplicated or self.history_gaps)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def audit(settings: Settings, traffic: Traffic, result: LoadResult, *,
                history_too: bool = True) -> Audit:
    """Compare every acked message with what the inboxes and the history hold."""
    redis = create_redis(settings)
    inbox = InboxStore(redis, retention_s=settings.inbox_retention_s)
    history = HistoryStore(settings)
    expected: dict[str, set[str]] = defaultdict(set)
    for message_id, (cid, _) in result.acked.items():
        for user in traffic.conversations[cid]:
            expected[user].add(message_id)
    lost = duplicated = out_of_order = 0
    try:
        for user in sorted(traffic.users):
            entries = await _whole_inbox(inbox, user)
            ids = Counter(m["message_id"] for m in entries)
            duplicated += sum(n - 1 for n in ids.values() if n > 1)
            lost += len(expected[user] - set(ids))
            last: dict[str, int] = {}
            for m in entries:
                if m["seq"] <= last.get(m["conversation_id"], 0):
                    out_of_order += 1
                last[m["conversation_id"]] = m["seq"]
        h_lost = h_dup = gaps = 0
        for cid in traffic.conversations if history_too else ():
            rows = await _whole_history(history, cid)
            seqs = [m["seq"] for m in rows]
            h_dup += len(seqs) - len(set(seqs))
            gaps += len(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
            acked_here = {mid for mid, (c, _) in result.acked.items() if c == cid}
            h_lost += len(acked_here - {m["message_id"] for m in rows})
    finally:
        await history.close()
        await redis.aclose()
    return Audit(len(result.acked), lost, duplicated, out_of_order, h_lost, h_dup, gaps)


async def _whole_inbox(inbox: InboxStore, user: str) -> list[dict[str, Any]]:
    """Everything a sync from the start returns: the inbox and any large-group feeds."""
    feeds = FeedStore(inbox.client, retention_s=inbox.retention_s)
    entries: list[dict[str, Any]] = []
    cursor = SyncCursor()
    while True:
        page = await read_page(inbox, feeds, user, cursor, 500)
        entries += page.messages
        cursor = page.cursor
        if not page.has_more:
            return entries


async def _whole_history(history: HistoryStore, cid: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        page = await history.page(cid, before=before, before_ts=None, limit=100)
        rows += page.messages
        if not page.has_more:
            return rows
        before = page.next_before


async def await_clean_audit(settings: Settings, traffic: Traffic, result: LoadResult, *,
                            within: float, history_too: bool = True) -> tuple[Audit, float]:
    """Audit until every acked message is everywhere once (or `within` s passed);
    returns the last audit and the monotonic time it was taken."""
    began = time.monotonic()
    while True:
        report = await audit(settings, traffic, result, history_too=history_too)
        now = time.monotonic()
        if report.clean or now - began > within:
            return report, now
        await asyncio.sleep(0.5)


async def whole_inboxes(settings: Settings,
                        users: set[str]) -> dict[str, dict[str, list[tuple[int, str]]]]:
    """Each user's inbox as conversation -> [(seq, message id)] in inbox order (the order
    that G1 promises; how conversations interleave is not part of it)."""
    redis = create_redis(settings)
    inbox = InboxStore(redis, retention_s=settings.inbox_retention_s)
    try:
        result: dict[str, dict[str, list[tuple[int, str]]]] = {}
        for user in sorted(users):
            grouped: dict[str, list[tuple[int, str]]] = {}
            for m in await _whole_inbox(inbox, user):
                grouped.setdefault(m["conversation_id"], []).append((m["seq"], m["message_id"]))
            result[user] = grouped
        return result
    finally:
        await redis.aclose()


def sequenced_messages(value: bytes) -> list[dict[str, Any]]:
    """The messages (membership changes included) that one `imflow.messages` record
    carries: one `{"v", "kind", "fanout", "message", "recipients"}`, or a batch record
    `{"v", "kind": "batch", "records": [...]}` of them."""
    record = orjson.loads(value)
    if record.get("kind") == "batch":
        return [item["message"] for item in record["records"]]
    return [record["message"]]


@dataclass
class SequencedAudit:
    """What `imflow.messages` itself holds for the traffic's conversations: the sinks'
    audit cannot tell a seq given twice (a sink keeps the first) from a clean run."""

    records: int  # messages read in the traffic's conversations
    seqs_reused: int  # (conversation, seq) pairs held by two or more message ids
    seq_gaps: int  # seqs missing from 1..max of a conversation
    acked_missing: int  # acked message ids that were never sequenced
    acked_twice: int  # acked message ids sequenced under two or more seqs

    @property
    def clean(self) -> bool:
        return not (self.seqs_reused or self.seq_gaps or self.acked_missing
                    or self.acked_twice)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def audit_sequenced(settings: Settings, traffic: Traffic,
                          result: LoadResult) -> SequencedAudit:
    """Read the whole messages topic up to its end offsets of now (committed records only:
    a transactional sequencer's aborted writes must not count) and audit its seqs."""
    ids_at: dict[tuple[str, int], set[str]] = defaultdict(set)  # (cid, seq) -> ids
    seqs_of: dict[str, set[int]] = defaultdict(set)  # message id -> seqs
    records = 0
    async for value in committed_values(settings, settings.topic_messages):
        for m in sequenced_messages(value):
            cid = m["conversation_id"]
            if cid in traffic.conversations:
                records += 1
                ids_at[(cid, m["seq"])].add(m["message_id"])
                seqs_of[m["message_id"]].add(m["seq"])
    max_seq: dict[str, int] = defaultdict(int)
    for cid, seq in ids_at:
        max_seq[cid] = max(max_seq[cid], seq)
    gaps = sum(1 for cid, top in max_seq.items() for seq in range(1, top + 1)
               if (cid, seq) not in ids_at)
    return SequencedAudit(
        records=records,
        seqs_reused=sum(1 for ids in ids_at.values() if len(ids) > 1),
        seq_gaps=gaps,
        acked_missing=sum(1 for mid in result.acked if mid not in seqs_of),
        acked_twice=sum(1 for mid in result.acked if len(seqs_of.get(mid, ())) > 1),
    )
