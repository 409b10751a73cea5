"""The local stack launcher: runs imflow's real processes (web x2 + every agent) against
the real services, for the tests (tests/) and the benchmarks (bench/).

Each run gets its own topics, consumer groups, HBase table and Redis database, so it
never mixes with a `make run` on the same machine. It runs from a checkout (it starts
`scripts/probe.py` and the package's console scripts).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import orjson

from app.auth import mint_token
from app.settings import Settings
from app.stores.redis_client import create_redis
from app.usecases.sinks import SINKS

if TYPE_CHECKING:
    import aiohttp

ROOT = Path(__file__).resolve().parents[1]  # the checkout: scripts/, the Procfile
BIN = Path(sys.executable).parent
# As in the Procfile: uvloop cut an agent's CPU per record by a fifth (bench.stages).
FAUST_WORKER = (str(BIN / "faust"), "-L", "uvloop", "-A")
AGENTS = ("sequencer", *SINKS)  # every agent: the sequencer, then each sink (app/usecases/sinks.py)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
T = TypeVar("T")


STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def session_env(run_id: str, workdir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMFLOW_")}
    for k in ("IMFLOW_TOPOLOGY", "IMFLOW_KAFKA_BOOTSTRAP", "IMFLOW_REDIS_URL",
              "IMFLOW_HBASE_HOST", "IMFLOW_HBASE_PORT"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(
        IMFLOW_SECRET=secrets.token_urlsafe(48),
        IMFLOW_APP_PREFIX=f"imflowtest-{run_id}",
        IMFLOW_TOPIC_INBOUND=f"imflowtest.{run_id}.inbound",
        IMFLOW_TOPIC_MESSAGES=f"imflowtest.{run_id}.messages",
        IMFLOW_TOPIC_DEAD_LETTER=f"imflowtest.{run_id}.dead-letter",
        IMFLOW_HBASE_TABLE=f"history_{run_id}",
        IMFLOW_PARTITIONS="4",
        IMFLOW_SEND_RATE_PER_S="100000",  # tests send fast; web[2] has a low limit
        IMFLOW_AGENT_METRICS_PORT="0",  # no fixed ports: `launched(metrics=True)` picks free ones
        IMFLOW_FAUST_DATA_DIR=str(workdir / "faust"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def tail(self, n: int = 80) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])


@dataclass
class Stack:
    env: dict[str, str]
    workdir: Path
    settings: Settings
    processes: dict[str, Process] = field(default_factory=dict)
    web_urls: list[str] = field(default_factory=list)
    metrics_urls: dict[str, str] = field(default_factory=dict)  # agent process -> /metrics

    def token(self, user: str, device: str = "default", ttl_s: int = 3600) -> str:
        return mint_token(self.env["IMFLOW_SECRET"], user, device=device, ttl_s=ttl_s)

    def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(env or {})},
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        proc = Process(name, popen, log)
        self.processes[name] = proc
        return proc

    def start_agent(self, agent: str, name: str | None = None,
                    env: dict[str, str] | None = None) -> Process:
        """A worker of `agent`, as process `name` (default: the agent's name).

        A process of another name (a second "sequencer-2") is another member of the same
        consumer group, with its own Faust data dir: a RocksDB store (the sequencer's)
        cannot be opened by two processes at once.
        """
        name = name or agent
        extra = {} if name == agent else {
            "IMFLOW_FAUST_DATA_DIR": str(self.workdir / f"faust-{name}")}
        return self.start(name, *FAUST_WORKER, f"agents.{agent}", "worker", "--without-web",
                          "-l", "info", env={**extra, **(env or {})})

    def start_web(self, name: str, port: int, env: dict[str, str] | None = None) -> Process:
        """A web process; the first ones started form `web_urls` (0, 1, ...)."""
        proc = self.start(name, str(BIN / "imflow"), "web", "--port", str(port), env=env)
        url = f"http://127.0.0.1:{port}"
        if url not in self.web_urls:
            self.web_urls.append(url)
        return proc

    def stop_all(self) -> None:
        for proc in self.processes.values():
            proc.stop()

    def describe_failure(self) -> str:
        return "\n\n".join(f"--- {p.name} (exit {p.popen.poll()}):\n{p.tail()}"
                           for p in self.processes.values())


async def wait_for(predicate: Callable[[], Awaitable[T | None]], *, within: float,
                   what: str, interval: float = 0.05) -> T:
    """Await until `predicate` returns a truthy value; fail with `what` after `within` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            last = await predicate()
        except Exception as exc:  # the condition may raise while a process warms up
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last={last!r}")
        await asyncio.sleep(interval)


def new_run_id() -> str:
    return uuid.uuid4().hex[:10]


def settings_from_env(env: dict[str, str]) -> Settings:
    values = {k[len("IMFLOW_"):].lower(): v for k, v in env.items() if k.startswith("IMFLOW_")}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


TOPOLOGY = os.environ.get("IMFLOW_TOPOLOGY", "single")  # the services a run uses


def redis_env(db: int) -> dict[str, str]:
    """Where a run keeps its Redis data: database `db` of the single server, or on the
    cluster topology the Redis Cluster itself (a cluster has database 0 only, and a run
    flushes it: do not point tests at a cluster whose data matters)."""
    if "IMFLOW_REDIS_URL" in os.environ or TOPOLOGY == "cluster":
        return {}
    return {"IMFLOW_REDIS_URL": f"redis://127.0.0.1:6379/{db}"}


def local_settings(*, redis_db: int, **values: Any) -> Settings:
    """Settings for a test that talks to the services itself (no stack)."""
    env = {k[len("IMFLOW_"):].lower(): v for k, v in redis_env(redis_db).items()}
    return Settings(_env_file=None, topology=TOPOLOGY, **{"secret": "x" * 32, **env, **values})


def probe_services() -> None:
    import pytest

    s = Settings(_env_file=None, topology=TOPOLOGY)
    brokers = s.kafka_bootstrap.split(",")
    probes = {"redis": [str(urlsplit(s.redis_url).port or 6379)],
              "kafka": [brokers[0].rsplit(":", 1)[1], str(len(brokers))], "hbase": []}
    for kind, args in probes.items():
        result = subprocess.run([sys.executable, "scripts/probe.py", kind, *args], cwd=ROOT,
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"{kind} is not running ({result.stderr.strip()}); "
                        "start the services with `make services`", pytrace=False)


@contextmanager
def prepared_env(workdir: Path, *, redis_db: int, **overrides: str) -> Iterator[dict[str, str]]:
    """A run's environment with its topics and table created; dropped afterwards."""
    probe_services()
    env = session_env(new_run_id(), workdir, **{**redis_env(redis_db), **overrides})
    subprocess.run([str(BIN / "imflow"), "init"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    try:
        yield env
    finally:
        drop_run_data(settings_from_env(env))


def drop_run_data(settings: Settings) -> None:
    """Delete the run's HBase table and Kafka topics (its Faust changelogs included)."""
    import happybase
    from aiokafka.admin import AIOKafkaAdminClient

    conn = happybase.Connection(settings.hbase_host, port=settings.hbase_port)
    try:
        conn.delete_table(settings.hbase_table_name, disable=True)
    finally:
        conn.close()

    async def drop_topics() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            prefixes = (settings.topic_inbound.rsplit(".", 1)[0], settings.app_prefix)
            names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()

    asyncio.run(drop_topics())


@asynccontextmanager
async def launched(env: dict[str, str], workdir: str | Path,
                   webs: Sequence[tuple[str, int, dict[str, str] | None]],
                   agents: Sequence[str] = AGENTS, metrics: bool = False, copies: int = 1
                   ) -> AsyncIterator[Stack]:
    """The agents (every one by default, `copies` processes of each: "inbox", "inbox-2",
    ...) and the given web processes, running and passing messages (with no agents: the
    webs ready); with `metrics`, each agent process serves its Prometheus metrics on a
    free port (`stack.metrics_urls`, by process name)."""
    settings = settings_from_env(env)
    redis = create_redis(settings)
    await redis.flushdb()  # on a cluster: every master
    await redis.aclose()
    stack = Stack(env=env, workdir=Path(workdir), settings=settings)
    try:
        for agent in agents:
            for copy in range(1, copies + 1):
                name = agent if copy == 1 else f"{agent}-{copy}"
                agent_env: dict[str, str] = {}
                if metrics:
                    port = free_port()
                    agent_env["IMFLOW_AGENT_METRICS_PORT"] = str(port)
                    stack.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
                stack.start_agent(agent, name=name, env=agent_env)
        for name, port, extra in webs:
            stack.start_web(name, port, env=extra)
        if agents:
            await wait_until_flowing(stack, {a: copies for a in agents})
        else:
            for url in stack.web_urls:
                await wait_web_ready(url)
        yield stack
    except BaseException:
        print(stack.describe_failure())
        print(await describe_offsets(settings))
        raise
    finally:
        stack.stop_all()


async def describe_offsets(settings: Settings) -> str:
    """Each agent group's committed offset and the end per partition: where a message that
    was not delivered stopped."""
    from app.usecases.stats import collect

    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_S / 4):
            rows = await collect(settings, interval_s=0.0)
    except Exception as exc:
        return f"--- offsets: not collected ({exc!r})"
    return "--- offsets (agent, partition: committed / end, lag):\n" + "\n".join(
        f"{r.agent}, {r.partition}: {r.committed} / {r.end}, {r.lag}" for r in rows)


async def wait_web_ready(url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async def ready() -> bool:
            async with session.get(url + "/readyz") as resp:
                return resp.status == 200
        await wait_for(ready, within=STARTUP_TIMEOUT_S, what=f"{url}/readyz")


async def wait_until_flowing(stack: Stack, processes: dict[str, int]) -> None:
    """Ready means: every web answers /readyz, every agent's group has settled with all
    of its `processes`, and a message reaches inbox and history."""
    import aiohttp

    from app.apiclient import Client

    for url in stack.web_urls:
        await wait_web_ready(url)
    # A second process of an agent can join its group after the first one already passed
    # the warm-up: the rebalance that follows (the sequencer's claims take seconds on a
    # busy box) would then hold back, and shed, the first test's messages.
    await wait_for(partial(groups_settled, stack.settings, processes),
                   within=STARTUP_TIMEOUT_S, what=f"every agent group settled: {processes}")
    async with aiohttp.ClientSession() as session:
        tag = new_run_id()
        a, b = f"warmup-a-{tag}", f"warmup-b-{tag}"
        writer = Client(session, stack.web_urls[0], stack.token(a))
        reader = Client(session, stack.web_urls[0], stack.token(b))
        await writer.send(to=b, client_msg_id="warmup", body="warm-up")

        async def delivered() -> bool:
            inbox = await reader.sync(since=0)
            history = await reader.history(f"u:{a}:{b}")
            return bool(inbox["messages"]) and bool(history["messages"])

        await wait_for(delivered, within=STARTUP_TIMEOUT_S, what="the warm-up message")

        # Delivered is not done: an agent group still settling its first rebalance can
        # commit the warm-up seconds later, and until then every web sheds new messages
        # (503 overloaded) by its backlog, which a test would take for the answer to its
        # own request.
        for url in stack.web_urls:
            await wait_for(partial(admitting, session, url), within=STARTUP_TIMEOUT_S,
                           what=f"{url} admitting (every agent committed the warm-up)")


async def groups_settled(settings: Settings, processes: dict[str, int]) -> bool:
    """Whether each agent's consumer group is stable with `processes[agent]` members."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    from app.usecases.stats import agent_group

    groups = {agent_group(settings, agent): n for agent, n in processes.items()}

    def describe() -> dict[str, Any]:  # aiokafka 0.14 cannot decode DescribeGroups here
        admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
        asked = admin.describe_consumer_groups(list(groups), request_timeout=5)
        return {group: future.result() for group, future in asked.items()}

    found = await asyncio.to_thread(describe)
    return all(found[group].state == ConsumerGroupState.STABLE
               and len(found[group].members) == n for group, n in groups.items())


async def admitting(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether the web at `url` admits new messages: its last backlog sample is 0 (every
    admitting agent has committed what it read)."""
    samples = await scrape(session, url + "/metrics")
    return samples.get(("imflow_ingress_backlog_seconds", ())) == 0


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    """A process's Prometheus samples by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(url) as resp:
        resp.raise_for_status()
        text = await resp.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def produce(stack: Stack, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Write raw (key, value) records to a topic, as an outside Kafka producer would."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def run_cli(stack: Stack, *args: str) -> dict[str, Any]:
    """Run `imflow ARGS` in the stack's environment; its last stdout line is JSON."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "imflow"), *args, cwd=ROOT, env=stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return dict(orjson.loads(out.decode().strip().splitlines()[-1]))
