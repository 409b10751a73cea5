"""Where does end-to-end latency go? One open-loop run, split into stages.

    .venv/bin/python -m bench.breakdown --rate 500 --duration 15   (after `make services`)

Also the CPU milliseconds each process (imflow, the services and the load generator)
spent per acked message over the run and its catch-up (until the inboxes hold every acked message).
For every acked message: client send -> web accepted (the message `ts`: its accepted_at,
unless an earlier message of the conversation had a later one), accepted -> the
sequenced record's Kafka timestamp (the sequencer's lag), that -> the XADD into the
recipient's inbox (the inbox agent's lag). Prints p50/p99 per stage as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer

from app.devstack import ROOT, Stack, free_port, launched, prepared_env
from app.models import parse_sequenced_items
from app.stores import keys
from app.stores.redis_client import create_redis
from bench.run import client_env, cpu_ms_per_message, inboxes_hold, pct, service_pids
from bench.stages import cpu_seconds

JMX_READER = ROOT / "bench" / "jmx" / "KafkaRequests.java"


async def sequenced_times(stack: Stack) -> dict[str, float]:
    """message_id -> Kafka timestamp (ms) of its record on imflow.messages."""
    times: dict[str, float] = {}
    consumer = AIOKafkaConsumer(stack.settings.topic_messages,
                                bootstrap_servers=stack.settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                for record in records:
                    for item in parse_sequenced_items(record.value):
                        if item.record is not None:
                            times[item.record.message.message_id] = float(record.timestamp)
    finally:
        await consumer.stop()
    return times


def kafka_requests(brokers: list[int]) -> dict[str, int]:
    """Requests the brokers (by pid) have served so far, by API, summed over brokers
    (bench/jmx/KafkaRequests.java reads each broker's request metrics over JMX)."""
    counts: dict[str, int] = {}
    for pid in brokers:
        out = subprocess.run(["java", str(JMX_READER), str(pid)], capture_output=True,
                             text=True, check=True).stdout
        for api, count in orjson.loads(out).items():
            if api not in ("FetchConsumer", "FetchFollower"):  # parts of "Fetch"
                counts[api] = counts.get(api, 0) + count
    return counts


def per_thousand(after: dict[str, int], before: dict[str, int], messages: int
                 ) -> dict[str, float]:
    """Requests per 1,000 acked messages between two readings, busiest first, and total."""
    made = {api: n - before.get(api, 0) for api, n in after.items()}
    scale = 1000 / max(1, messages)
    out = {api: round(n * scale, 1) for api, n in sorted(made.items(), key=lambda kv: -kv[1])
           if n > 0}
    return {**out, "total": round(sum(made.values()) * scale, 1)}


async def run(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    webs = [(f"web{i + 1}", free_port(), None) for i in range(args.webs)]
    async with launched(env, workdir, webs) as stack:
        tag = uuid.uuid4().hex[:6]
        out = workdir / "sent.json"
        pids = {**{name: p.popen.pid for name, p in stack.processes.items()},
                **service_pids()}
        brokers = [pid for name, pid in pids.items() if name.startswith("kafka")]
        requests_before = kafka_requests(brokers) if args.kafka_requests else {}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.loadgen", "--urls", ",".join(stack.web_urls),
            "--tag", tag, "--pairs", str(args.pairs),
            "--rate", str(args.rate), "--duration", str(args.duration), "--out", str(out),
            cwd=ROOT, env=client_env(env["IMFLOW_SECRET"]))
        await asyncio.sleep(0.5)  # let it import and start before its CPU is read
        loadgen_cpu = 0.0
        while loadgen.returncode is None:
            loadgen_cpu = max(loadgen_cpu, cpu_seconds(loadgen.pid))
            try:
                await asyncio.wait_for(loadgen.wait(), 0.5)
            except TimeoutError:
                pass
        sent = {m[0]: m for m in orjson.loads(out.read_bytes())["sent"] if m[4] == 202}
        load_ended = time.monotonic()
        caught_up = await inboxes_hold(stack.settings,
                                       [f"r{i}-{tag}" for i in range(args.pairs)], len(sent),
                                       within=args.drain)
        # CPU over the load and its catch-up only: a fixed drain window would add the
        # idle stack's own CPU (about a third of a core here) to every message.
        cpu_ms = cpu_ms_per_message(cpu_before, pids, len(sent))
        cpu_ms["loadgen"] = round(1000 * loadgen_cpu / max(1, len(sent)), 3)
        cpu_ms["total"] = round(cpu_ms["total"] + cpu_ms["loadgen"], 3)  # here with the client
        requests = ({} if not args.kafka_requests else per_thousand(
            kafka_requests(brokers), requests_before, len(sent)))
        sequenced = await sequenced_times(stack)
        redis = create_redis(stack.settings)
        stages: dict[str, list[float]] = {"web": [], "sequencer": [], "inbox": []}
        # per second of the run (by send time): the worst sequencer and inbox lag, to
        # tell a stall (a few bad seconds) from a stage that falls steadily behind
        worst: dict[int, list[float]] = {}
        try:
            for i in range(args.pairs):
                entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                               await redis.xrange(keys.inbox(f"r{i}-{tag}")))
                for entry_id, fields in entries:
                    message = orjson.loads(fields[b"m"])
                    m = sent.get(message["message_id"])
                    if m is None or message["message_id"] not in sequenced:
                        continue
                    accepted = float(message["ts"])
                    at_topic = sequenced[message["message_id"]]
                    stages["web"].append(accepted - m[3])
                    stages["sequencer"].append(at_topic - accepted)
                    stages["inbox"].append(float(entry_id.split(b"-")[0]) - at_topic)
                    second = worst.setdefault(int(m[3] / 1000), [0.0, 0.0])
                    second[0] = max(second[0], stages["sequencer"][-1])
                    second[1] = max(second[1], stages["inbox"][-1])
        finally:
            await redis.aclose()
    start = min(worst, default=0)
    timeline = ({str(sec - start): [round(v) for v in worst[sec]] for sec in sorted(worst)}
                if args.timeline else {})
    return {"rate": args.rate, "acked": len(sent), "measured": len(stages["web"]),
            "caught_up_after_s": round(caught_up - load_ended, 2),
            "cpu_ms_per_message": cpu_ms,
            **({"worst_lag_ms_per_second": timeline} if args.timeline else {}),
            **({"kafka_requests_per_1k_messages": requests} if args.kafka_requests else {}),
            **{f"{k}_p50_ms": pct(v, 50) for k, v in stages.items()},
            **{f"{k}_p99_ms": pct(v, 99) for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--webs", type=int, default=1)
    parser.add_argument("--drain", type=float, default=20, help="longest wait for the catch-up")
    parser.add_argument("--timeline", action="store_true",
                        help="also print, per second of sends, the worst sequencer and "
                        "inbox lag (ms)")
    parser.add_argument("--kafka-requests", action="store_true",
                        help="also count the brokers' requests by API over the run and "
                        "its catch-up, per 1,000 acked messages (reads each broker's JMX "
                        "metrics through the JVM's local attach API)")
    parser.add_argument("--set", nargs="*", default=[], metavar="IMFLOW_X=VALUE",
                        help="settings for the stack's processes, e.g. "
                        "IMFLOW_SEQUENCER_ROUND_MS=0")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    workdir = Path(tempfile.mkdtemp(prefix="imflow-breakdown-"))
    try:
        with prepared_env(workdir, redis_db=12, **overrides) as env:
            print(orjson.dumps(asyncio.run(run(args, env, workdir))).decode())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
