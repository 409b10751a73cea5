"""Back-to-back Kafka transactions, as the sequencer runs them under load, with aiokafka's
retry of CONCURRENT_TRANSACTIONS after its fixed 20 ms against imflow's shorter one.

    .venv/bin/python -m bench.transactions --transactions 300 --rounds 3   (after `make services`)

Each transaction writes one record to a messages and one to a state topic, like a
sequencer round of one message. The next one begins as soon as
the previous commit returns, which is when the broker may still be writing its markers
(app/stores/kafka.py, CONCURRENT_TXN_BACKOFF_S). The two backoffs alternate in each
round, so both see the same machine. Prints one JSON line: per backoff, the median over
rounds of each round's p50 / p90 / p99 transaction time and the client's CPU ms per
transaction, and the ratio of the p50s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.settings import Settings
from app.stores.kafka import (
    CONCURRENT_TXN_BACKOFF_S,
    TXN_RETRY_BACKOFF_MS,
    retry_concurrent_transactions_after,
)

AIOKAFKA_BACKOFF_S = 0.02


async def one_round(settings: Settings, topics: tuple[str, str], count: int
                    ) -> dict[str, float]:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                transactional_id=f"bench-txn-{uuid.uuid4().hex[:8]}",
                                linger_ms=0, retry_backoff_ms=TXN_RETRY_BACKOFF_MS)
    await producer.start()
    times: list[float] = []
    try:
        cpu = time.process_time()
        for _ in range(count):
            began = time.perf_counter()
            await producer.begin_transaction()
            sent = [await producer.send(topics[0], b"m" * 200, partition=0),
                    await producer.send(topics[1], b"s" * 50, partition=0)]
            await producer.commit_transaction()
            await asyncio.gather(*sent)
            times.append((time.perf_counter() - began) * 1000)
        cpu_ms = (time.process_time() - cpu) * 1000 / count
    finally:
        await producer.stop()
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * count)],
            "p99_ms": times[int(0.99 * count)], "client_cpu_ms": cpu_ms}


async def main(count: int, rounds: int) -> dict[str, Any]:
    settings = Settings()
    tag = uuid.uuid4().hex[:8]
    topics = (f"bench-txn-messages-{tag}", f"bench-txn-state-{tag}")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    config = {"min.insync.replicas": str(settings.min_insync_replicas)}
    await admin.create_topics([NewTopic(t, 1, settings.replication_factor, topic_configs=config)
                               for t in topics])
    runs: dict[float, list[dict[str, float]]] = {AIOKAFKA_BACKOFF_S: [],
                                                 CONCURRENT_TXN_BACKOFF_S: []}
    try:
        await one_round(settings, topics, 20)  # warm-up: leaders, coordinator, connections
        for _ in range(rounds):
            for backoff, results in runs.items():
                retry_concurrent_transactions_after(backoff)
                results.append(await one_round(settings, topics, count))
    finally:
        await admin.delete_topics(list(topics))
        await admin.close()
    out: dict[str, Any] = {"transactions": count, "rounds": rounds}
    for backoff, results in runs.items():
        out[f"backoff_{int(backoff * 1000)}ms"] = {
            key: round(statistics.median(r[key] for r in results), 2) for key in results[0]}
    ours, theirs = (out[f"backoff_{int(b * 1000)}ms"]["p50_ms"]
                    for b in (CONCURRENT_TXN_BACKOFF_S, AIOKAFKA_BACKOFF_S))
    out["p50_ratio"] = round(ours / theirs, 3)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(orjson.dumps(asyncio.run(main(args.transactions, args.rounds))).decode())
