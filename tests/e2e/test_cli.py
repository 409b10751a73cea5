"""The daily-work commands: `imflow send`, `imflow tail`, `imflow stats` (real processes,
real services)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from app.apiclient import Client
from app.devstack import BIN, ROOT, Stack, run_cli, wait_for
from tests.e2e.conftest import DELIVERY_TIMEOUT_S, await_inbox, direct

pytestmark = pytest.mark.services


async def test_send_posts_as_the_user_to_a_user_and_to_a_group(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob, gid = names("alice", "bob", "team")
    url = stack.web_urls[0]
    accepted = await run_cli(stack, "send", "--as", alice, "--to", bob, "hi from the cli",
                             "--url", url)
    assert accepted["conversation_id"] == direct(alice, bob)
    await client_for(alice).ok("POST", "/v1/groups", expect=201,
                               json={"group_id": gid, "members": [bob]})
    to_group = await run_cli(stack, "send", "--as", bob, "--group", gid, "to the team",
                             "--url", url)
    assert to_group["conversation_id"] == f"g:{gid}"
    got = await await_inbox(client_for(bob, "watch"), 3, "the two sent messages")
    texts = {(m["sender"], m["body"]["text"]) for m in got if m["type"] == "text"}
    assert texts == {(alice, "hi from the cli"), (bob, "to the team")}
    assert accepted["message_id"] in {m["message_id"] for m in got}


async def test_send_fails_clearly_when_the_server_refuses(
    stack: Stack, names: Callable[..., list[str]],
) -> None:
    (alice,) = names("alice")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "imflow"), "send", "--as", alice, "--group", "no-such-group", "x",
        "--url", stack.web_urls[0], cwd=ROOT, env=stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 1
    assert orjson.loads(out)["error"]["code"] == "no_such_group"


async def test_tail_prints_the_users_live_pushes(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "imflow"), "tail", bob, "--json", "--count", "2", "--url", stack.web_urls[1],
        cwd=ROOT, env=stack.env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        ready = await asyncio.wait_for(proc.stderr.readline(), timeout=30)
        assert ready.decode().startswith(f"tailing {bob} ")
        sent = [await client_for(alice).send(to=bob, client_msg_id=f"t{i}", body={"text": t})
                for i, t in enumerate(("one", "two"))]
        lines = [await asyncio.wait_for(proc.stdout.readline(), timeout=DELIVERY_TIMEOUT_S)
                 for _ in sent]
        pushed = [orjson.loads(line) for line in lines]
        assert [m["message_id"] for m in pushed] == [s["message_id"] for s in sent]
        assert [m["body"]["text"] for m in pushed] == ["one", "two"]
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0  # --count 2: done
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_stats_shows_every_agent_and_partition_and_lag_drains(
    stack: Stack, names: Callable[..., list[str]], client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    for i in range(20):
        await client_for(alice).send(to=bob, client_msg_id=f"s{i}", body={"text": str(i)})
    await await_inbox(client_for(bob, "watch"), 20, "20 messages")

    lagging: list[dict[str, Any]] = []

    async def drained() -> dict[str, Any] | None:
        stats = await run_cli(stack, "stats", "--json", "--interval", "0.2")
        lagging[:] = [r for r in stats["partitions"] if r["lag"]]
        return None if lagging else stats
    # push, inbox and history all delivered; every group catches up to the end (lag 0)
    try:
        stats = await wait_for(drained, within=DELIVERY_TIMEOUT_S, what="every lag at 0")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; lagging: {lagging}") from None
    partitions = stack.settings.partitions
    rows = stats["partitions"]
    assert {(r["agent"], r["partition"]) for r in rows} == {
        (a, p) for a in ("sequencer", "inbox", "history", "push") for p in range(partitions)}
    for row in rows:
        assert row["group"] == f"{stack.settings.app_prefix}-{row['agent']}"
        assert row["committed"] is None or row["committed"] <= row["end"]
        assert row["rate"] >= 0
    ends = {a: sum(r["end"] for r in rows if r["agent"] == a) for a in stats["agents"]}
    # 20 sends awaited one by one are 20 inbound records; the sequencer may pack them into
    # fewer batch records (SPEC 4), so the three readers of imflow.messages share one end
    assert ends["sequencer"] >= 20
    assert ends["inbox"] == ends["history"] == ends["push"] >= 1
    assert set(stats["agents"]) == {"sequencer", "inbox", "history", "push"}


async def test_stats_table(stack: Stack) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "imflow"), "stats", "--interval", "0.2", cwd=ROOT,
        env={**stack.env, "COLUMNS": "120"}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    table = out.decode()
    for word in ("agent", "partition", "committed", "end", "lag", "rate/s", "sequencer total",
                 "inbox total", "history total", "push total"):
        assert word in table, word
