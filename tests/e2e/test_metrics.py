"""Every process serves Prometheus metrics: each agent on its own port (processed
records and messages, batch sizes and times per store, retries, dead letters, consumer lag
per partition), the web its request latency, open WebSockets and pushes."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from app.apiclient import Client
from app.devstack import Samples, Stack, produce, scrape, wait_for
from tests.e2e.conftest import await_history, await_inbox, direct

pytestmark = pytest.mark.services

async def scrape_agent(http: aiohttp.ClientSession, stack: Stack, agent: str) -> Samples:
    """The samples of every process of `agent` ("inbox", "inbox-2", ...), summed: each
    process counts the partitions Kafka gave it."""
    total: Samples = {}
    for name, url in stack.metrics_urls.items():
        if name == agent or name.startswith(f"{agent}-"):
            for key, v in (await scrape(http, url)).items():
                total[key] = total.get(key, 0.0) + v
    return total


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_agent_counts_its_work_and_shows_lag_per_partition(
    stack: Stack, http: aiohttp.ClientSession, names: Callable[..., list[str]],
    client_for: Callable[..., Client],
) -> None:
    agents = ("sequencer", "inbox", "history", "push")
    assert {name.split("-")[0] for name in stack.metrics_urls} == set(agents)
    before = {a: await scrape_agent(http, stack, a) for a in agents}
    alice, bob = names("alice", "bob")
    for i in range(10):
        await client_for(alice).send(to=bob, client_msg_id=f"m{i}", body={"text": str(i)})
    await await_inbox(client_for(bob, "watch"), 10, "10 messages")
    await await_history(client_for(bob), direct(alice, bob), 10)

    stores = {"sequencer": "kafka", "inbox": "redis", "history": "hbase", "push": "redis"}
    for agent in agents:
        async def counted(agent: str = agent) -> Samples | None:
            now = await scrape_agent(http, stack, agent)
            done = (value(now, "imflow_agent_messages_total", agent=agent)
                    - value(before[agent], "imflow_agent_messages_total", agent=agent)) >= 10
            return now if done else None
        now = await wait_for(counted, within=30, what=f"{agent} counting 10 messages")
        records = (value(now, "imflow_agent_records_total", agent=agent)
                   - value(before[agent], "imflow_agent_records_total", agent=agent))
        assert records >= 1  # a batch record carries one message or more
        assert value(now, "imflow_agent_batch_records_count", agent=agent) > 0
        assert value(now, "imflow_agent_batch_seconds_count", agent=agent,
                     store=stores[agent]) > 0

        async def lag_shown(agent: str = agent) -> Samples | None:
            now = await scrape_agent(http, stack, agent)
            rows = {dict(labels)["partition"] for (name, labels) in now
                    if name == "imflow_agent_consumer_lag"}
            return now if len(rows) == stack.settings.partitions else None
        now = await wait_for(lag_shown, within=30, what=f"{agent} lag per partition")
        topic = (stack.settings.topic_inbound if agent == "sequencer"
                 else stack.settings.topic_messages)
        for p in range(stack.settings.partitions):
            labels = {"agent": agent, "topic": topic, "partition": str(p)}
            assert value(now, "imflow_agent_consumer_lag", **labels) >= 0
            assert ("imflow_agent_end_offset", tuple(sorted(labels.items()))) in now


async def test_a_dead_letter_is_counted(stack: Stack, http: aiohttp.ClientSession) -> None:
    before = value(await scrape_agent(http, stack, "sequencer"),
                   "imflow_agent_dead_letters_total", agent="sequencer")
    await produce(stack, stack.settings.topic_inbound, [("u:a:b", b"not json")])

    async def counted() -> bool:
        now = value(await scrape_agent(http, stack, "sequencer"),
                    "imflow_agent_dead_letters_total", agent="sequencer")
        return now >= before + 1
    await wait_for(counted, within=30, what="the dead letter counted")


async def test_the_web_counts_open_websockets_and_pushes(
    stack: Stack, http: aiohttp.ClientSession, names: Callable[..., list[str]],
    client_for: Callable[..., Client],
) -> None:
    alice, bob = names("alice", "bob")
    url = stack.web_urls[1] + "/metrics"
    before = await scrape(http, url)
    async with client_for(bob, web=1).ws() as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "ready"
        opened = await scrape(http, url)
        assert value(opened, "imflow_ws_open") == value(before, "imflow_ws_open") + 1
        await client_for(alice).send(to=bob, client_msg_id="p1", body={"text": "push"})
        assert (await ws.receive_json(timeout=30))["type"] == "message"
        pushed = await scrape(http, url)
        assert (value(pushed, "imflow_ws_pushes_total")
                - value(before, "imflow_ws_pushes_total")) >= 1

    async def closed() -> bool:
        return value(await scrape(http, url), "imflow_ws_open") == value(before, "imflow_ws_open")
    await wait_for(closed, within=10, what="the closed socket uncounted")
    # a WebSocket's request is timed once it ends, like any other route's: when the
    # handler has returned to `served` (app/web/app.py), a moment after the socket is
    # uncounted
    async def timed() -> bool:
        done = await scrape(http, url)
        return (value(done, "imflow_http_request_seconds_count", route="/v1/ws")
                > value(before, "imflow_http_request_seconds_count", route="/v1/ws"))
    await wait_for(timed, within=10, what="the WebSocket request timed")
