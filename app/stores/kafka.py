"""The Kafka side of imflow: the ingress producer, the sequencer's transactions, topic
creation and a health probe. No aiokafka exception leaves this module."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer import sender as aiokafka_sender
from confluent_kafka import KafkaException

from app.errors import Fenced, StoreUnavailable
from app.models import encode_batch, pack
from app.settings import Settings
from app.stores.librdkafka import AckingProducer

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
# Records added this close together share one expiry timer (`_Expiry`).
EXPIRY_GRAIN_S = 0.01
# What a Kafka client call can fail with: aiokafka also asserts on its own state in places,
# e.g. a coordinator lookup while no broker is known (a whole cluster restarting), which
# must be retried like any outage, not crash the agent that called it.
CLIENT_ERRORS = (KafkaError, OSError, TimeoutError, AssertionError,
                 # the ingress's librdkafka producer (a full queue is a BufferError)
                 KafkaException, BufferError)


@lru_cache(maxsize=100_000)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` among `partitions`."""
    return _key_hash(key) % partitions


def key_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Kafka's default partitioner (murmur2 of the key, as every Kafka client computes it,
    so outside producers put a conversation on the same partition), memoised per key:
    aiokafka's pure-Python murmur2 was 5% of the ingress CPU, and a conversation's key
    repeats with every message."""
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[partition_of(key, len(all_partitions))]


class InboundProducer:
    """Appends records to `imflow.inbound` with acks=all; a send either is acked or fails.

    It fails fast (within `produce_timeout_s`), so the ingress answers 503 instead of
    hanging while Kafka is down, and it (re)connects lazily: the web process starts and
    serves 503s without Kafka, and recovers by itself when Kafka is back. A record whose
    ack timed out may still land; the client's retry with the same client_msg_id is
    deduplicated by the sequencer, so retrying is always safe.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AckingProducer | None = None
        self._starting = asyncio.Lock()
        self._partitions: dict[str, list[int]] = {}
        self._rounds: dict[str, _Rounds] = {}
        self._failing = FailingTargets(settings.ingress_outage_probe_s)
        self._stopping: set[asyncio.Task[None]] = set()  # broken producers being closed

    async def start(self) -> None:
        """Connect now if Kafka answers; otherwise the first send tries again."""
        try:
            await self._connected()
        except StoreUnavailable as exc:
            log.warning("Kafka not reachable at start-up, will retry on demand: %s", exc)

    async def _connected(self) -> AckingProducer:
        if self._producer is not None:
            return self._producer
        async with self._starting:
            if self._producer is None:
                producer = AckingProducer.for_ingress(self._settings)
                try:
                    await producer.check(self._settings.produce_timeout_s)
                except BaseException as exc:  # a send's deadline may cancel the check
                    self._close_later(producer)  # its threads must not outlive it
                    if isinstance(exc, CLIENT_ERRORS):
                        raise StoreUnavailable(
                            f"Kafka unreachable at {self._settings.kafka_bootstrap}: {exc!r}"
                        ) from exc
                    raise
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        for rounds in self._rounds.values():
            await rounds.stop()
        if self._producer is not None:
            await self._producer.close(self._settings.produce_timeout_s)
        if self._stopping:
            await asyncio.wait(self._stopping)

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Append one encoded record and wait for the broker's ack, or raise
        StoreUnavailable. Records that arrive close together go out together, one batch
        record per partition (`_Rounds`). A send to a partition (or, unconnected, to a
        Kafka) that just failed is refused at once (`FailingTargets`)."""
        deadline = asyncio.get_running_loop().time() + self._settings.produce_timeout_s
        producer = self._producer
        partitions = self._partitions.get(topic)
        target: tuple[str, int] | None = None  # None: Kafka itself, before a partition
        try:
            if producer is None or partitions is None:  # connected and known: no wait
                with self._failing.trying(None):
                    async with asyncio.timeout_at(deadline):
                        producer = await self._connected()
                        partitions = await producer.partitions(
                            topic, self._settings.produce_timeout_s)
                        self._partitions[topic] = partitions
            raw_key = key.encode()
            partition = key_partitioner(raw_key, partitions, partitions)
            target = (topic, partition)
            with self._failing.trying(target):
                rounds = self._rounds.get(topic)
                if rounds is None:
                    rounds = self._rounds[topic] = _Rounds(self, topic)
                await rounds.add(partition, raw_key, value, deadline)
        except CLIENT_ERRORS as exc:
            if producer is not None and producer.fatal is not None:
                self._reset(producer)
            raise StoreUnavailable(f"{_describe(target)} did not ack: {exc!r}") from exc

    def _reset(self, broken: AckingProducer) -> None:
        """Drop a producer that librdkafka gave up (a fatal error, e.g. its idempotence
        state refused by the brokers); the next send starts a new one. The broken one is
        closed in the background: the request that found it broken answers at once."""
        if self._producer is not broken:
            return  # another send replaced it already
        self._producer = None
        self._partitions.clear()
        log.warning("Kafka producer state lost; starting a new producer")
        self._close_later(broken)

    def _close_later(self, producer: AckingProducer) -> None:
        closing = asyncio.create_task(producer.close(0), name="imflow-producer-close")
        self._stopping.add(closing)
        closing.add_done_callback(self._stopping.discard)

    async def ping(self) -> None:
        """Raise unless the broker answers a metadata request."""
        producer = await self._connected()
        try:
            await producer.check(2)
        except CLIENT_ERRORS as exc:
            raise StoreUnavailable(f"Kafka metadata: {exc!r}") from exc


class FailingTargets:
    """Where the ingress's last send failed: a Kafka it could not connect to (None), or a
    partition whose leader did not ack. While one is down, a send there is refused at once
    instead of waiting out the produce timeout as the sends before it did: answers stay
    fast (the client retries after Retry-After) and requests in flight stay few. Every
    `probe_s`, one send goes through as the probe; its success opens the target again.
    Any send that succeeds there (one in flight before the failure, too) opens it."""

    def __init__(self, probe_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe_s = probe_s
        self._clock = clock
        self._failed_at: dict[object, float] = {}
        self._probing: set[object] = set()

    def trying(self, target: object) -> _Attempt:
        """A context for one send to `target`; entering it raises StoreUnavailable at
        once if the target is down and not due for a probe. An error out of the block
        marks it down (a cancellation, which says nothing about Kafka, does not)."""
        return _Attempt(self, target)

    def _enter(self, target: object) -> bool:
        """Check a send to `target`; whether it is the target's probe."""
        failed_at = self._failed_at.get(target)
        if failed_at is None:
            return False
        since = self._clock() - failed_at
        if target in self._probing or since < self._probe_s:
            raise StoreUnavailable(f"{_describe(target)} failed {since:.1f}s ago; not sent")
        self._probing.add(target)
        return True

    def _exit(self, target: object, probe: bool, failed: bool) -> None:
        if failed:
            self._failed_at[target] = self._clock()
        elif self._failed_at:
            self._failed_at.pop(target, None)
        if probe:
            self._probing.discard(target)


class _Attempt:
    """One send under `FailingTargets.trying` (a plain class: one per request, so no
    generator-based context manager)."""

    __slots__ = ("_probe", "_target", "_targets")

    def __init__(self, targets: FailingTargets, target: object) -> None:
        self._targets = targets
        self._target = target
        self._probe = False

    def __enter__(self) -> None:
        self._probe = self._targets._enter(self._target)

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._targets._exit(self._target, self._probe,
                            kind is not None and issubclass(kind, Exception))


def _describe(target: object) -> str:
    if isinstance(target, tuple):
        return f"{target[0]}[{target[1]}]"
    return "Kafka"


Pending = tuple[bytes, bytes, "asyncio.Future[None]"]  # key, value, acked


class _Rounds:
    """The ingress's records for one topic, sent in rounds: one round under way at a
    time, holding every partition's waiting records, one batch record per partition (a
    single record when alone), handed to librdkafka back to back, so a round goes out in
    one produce request per broker, or few. A round
    starts at once when the topic was idle for the linger window (a message alone at an
    idle moment waits for nothing), else `ingress_batch_linger_ms` after the previous
    round began: under load the per-record costs of Kafka and of every agent downstream
    are paid per batch, and the produce requests per second stay bounded. A round that
    holds `ingress_round_full_records` starts as soon as the one before it is acked: its
    batching has paid off, and waiting out the linger would only bound the rate of
    clients that wait for their answers (N connections: N per linger window)."""

    def __init__(self, owner: InboundProducer, topic: str) -> None:
        self._owner = owner
        self._topic = topic
        self._pending: dict[int, list[Pending]] = {}
        self._count = 0  # records in _pending
        self._task: asyncio.Task[None] | None = None
        self._last_round = 0.0  # loop time the last round began
        self._filled: asyncio.Future[None] | None = None  # a lingering round waits on it
        self._expiry: _Expiry | None = None  # the newest records' deadline

    def add(self, partition: int, key: bytes, value: bytes,
            deadline: float) -> asyncio.Future[None]:
        """Add a record to the next round: a future done once it is acked, or failed with
        TimeoutError at `deadline` (loop time; up to `EXPIRY_GRAIN_S` sooner). A caller
        cancelled while awaiting it cancels the future; its record still goes out (the
        client's retry of it is deduplicated by the sequencer)."""
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(partition, []).append((key, value, acked))
        self._count += 1
        if (self._filled is not None and not self._filled.done()
                and self._count >= self._owner._settings.ingress_round_full_records):
            self._filled.set_result(None)
        if self._task is None:
            self._task = asyncio.create_task(self._send_rounds(), name="imflow-ingress")
        expiry = self._expiry
        if expiry is None or deadline - expiry.deadline > EXPIRY_GRAIN_S:
            expiry = self._expiry = _Expiry(deadline)
        expiry.futures.append(acked)
        return acked

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for waiting in self._pending.values():
            for _, _, acked in waiting:
                if not acked.done():
                    acked.set_exception(StoreUnavailable("the producer is stopping"))
        self._pending = {}
        self._count = 0

    def _take(self, partition: int) -> list[Pending]:
        """The next batch of a partition: as many of its records as fit in one."""
        settings = self._owner._settings
        waiting = self._pending[partition]
        head = waiting[:settings.ingress_batch_max_records]
        _, end = next(pack([v for _, v, _ in head], settings.record_batch_max_bytes))
        batch, rest = waiting[:end], waiting[end:]
        self._count -= len(batch)
        if rest:
            self._pending[partition] = rest
        else:
            del self._pending[partition]
        return batch

    async def _send_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self._owner._settings
        linger_s = settings.ingress_batch_linger_ms / 1000
        try:
            while self._pending:
                wait = self._last_round + linger_s - loop.time()
                if wait > 0 and self._count < settings.ingress_round_full_records:
                    await self._until_full(wait)
                self._last_round = loop.time()
                round_ = [(p, self._take(p)) for p in list(self._pending)]
                await self._send(round_)
        finally:
            self._task = None

    async def _until_full(self, wait: float) -> None:
        """Wait `wait` seconds, or less if the round fills first."""
        filled = self._filled = asyncio.get_running_loop().create_future()
        timer = asyncio.get_running_loop().call_later(wait, _wake, filled)
        try:
            await filled
        finally:
            timer.cancel()
            self._filled = None

    async def _send(self, round_: list[tuple[int, list[Pending]]]) -> None:
        try:
            producer = await self._owner._connected()
        except Exception as exc:
            for _, batch in round_:
                _settle(batch, exc)
            return
        handed: list[tuple[list[Pending], asyncio.Future[None]]] = []
        for partition, batch in round_:
            try:
                if len(batch) == 1:
                    key, value, _ = batch[0]
                    handed.append((batch, producer.send(self._topic, partition, key, value)))
                else:
                    handed.append((batch, producer.send(
                        self._topic, partition, None,
                        encode_batch([v for _, v, _ in batch]))))
            except Exception as exc:  # not handed over (the producer's queue is full)
                _settle(batch, exc)
        results = await asyncio.gather(*(acked for _, acked in handed),
                                       return_exceptions=True)
        for (batch, _), result in zip(handed, results, strict=True):
            _settle(batch, result if isinstance(result, BaseException) else None)


def _wake(filled: asyncio.Future[None]) -> None:
    if not filled.done():
        filled.set_result(None)


class _Expiry:
    """The deadline of the records added within `EXPIRY_GRAIN_S` after the first of them:
    one timer fails every one not acked by then. (A timer and its cancellation per record
    were a tenth of what the rounds cost the ingress per request.)"""

    __slots__ = ("deadline", "futures")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.futures: list[asyncio.Future[None]] = []
        asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        for acked in self.futures:
            if not acked.done():
                acked.set_exception(TimeoutError("the produce timeout passed before Kafka's ack"))
        self.futures = []


def _settle(batch: list[Pending], error: BaseException | None) -> None:
    for _, _, acked in batch:
        if acked.done():
            continue
        if error is None:
            acked.set_result(None)
        else:
            acked.set_exception(error)


async def topic_partitions(settings: Settings, topic: str) -> set[int]:
    """A topic's partition numbers, as the brokers know them now (ValueError if unknown)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        await admin.start()
        try:
            return await described_partitions(admin, topic)
        finally:
            await admin.close()
    except CLIENT_ERRORS as exc:
        raise StoreUnavailable(f"describing {topic}: {exc!r}") from exc


async def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's end offset as a read_committed reader sees it (before any
    transaction still open; the high watermark when none is)."""
    partitions = await topic_partitions(settings, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        return {tp.partition: int(o) for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def described_partitions(admin: AIOKafkaAdminClient, topic: str) -> set[int]:
    """`topic_partitions` through an admin client the caller keeps open."""
    (described,) = await admin.describe_topics([topic])
    if described["error_code"] != 0:
        raise ValueError(f"topic {topic!r}: Kafka error code {described['error_code']}")
    return {p["partition"] for p in described["partitions"]}


async def ensure_topics(settings: Settings) -> list[str]:
    """Create imflow's topics if missing (idempotent); returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    retention_ms = str(settings.messages_retention_s * 1000)
    durable = {"min.insync.replicas": str(settings.min_insync_replicas)}

    def new_topic(name: str, partitions: int, **configs: str) -> NewTopic:
        return NewTopic(name, partitions, settings.replication_factor,
                        topic_configs={**durable, **configs})

    wanted = [
        new_topic(settings.topic_inbound, settings.partitions, **{"retention.ms": retention_ms}),
        new_topic(settings.topic_messages, settings.partitions, **{"retention.ms": retention_ms}),
        new_topic(settings.topic_dead_letter, 1, **{"retention.ms": retention_ms}),
        # The sequencer's changelogs (tables/sequencer_state.py), one partition per
        # inbound partition: the state compacted, the dedup window kept by time, an hour
        # longer than the window, in segments of an hour so it is dropped an hour at a time.
        new_topic(settings.sequencer_state_topic, settings.partitions,
                  **{"cleanup.policy": "compact", "segment.ms": str(HOUR_MS)}),
        new_topic(settings.sequencer_dedup_topic, settings.partitions,
                  **{"cleanup.policy": "delete",
                     "retention.ms": str(settings.dedup_window_s * 1000 + HOUR_MS),
                     "segment.ms": str(HOUR_MS)}),
    ]
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        for topic in wanted:
            if topic.name in existing:
                continue
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created


# ---------------------------------------------------------------- the sequencer's writes

# Another producer with the same transactional id started: this one may never write again.
FENCED = (ProducerFenced, InvalidProducerEpoch)
# A transactional producer's retries of a failed request: 100 ms by default, which put the
# sequencer's median lag at ~65 ms.
TXN_RETRY_BACKOFF_MS = 5
# The next transaction's first request (AddPartitionsToTxn) often meets the previous one's
# commit markers still being written: CONCURRENT_TRANSACTIONS (KAFKA-5477). aiokafka 0.14
# retries that one after a fixed 20 ms (`aiokafka.producer.sender.BACKOFF_OVERRIDE`), not
# after `retry_backoff_ms`; the markers take 1-3 ms here. `python -m bench.transactions`
# measures back-to-back transactions with both.
CONCURRENT_TXN_BACKOFF_S = 0.002


def retry_concurrent_transactions_after(seconds: float) -> None:
    """Set how long aiokafka waits before it retries a transaction's first request that
    met CONCURRENT_TRANSACTIONS (a module constant of its sender, read at each retry)."""
    aiokafka_sender.BACKOFF_OVERRIDE = seconds


@dataclass(frozen=True)
class Write:
    """One record of a transaction: partition None lets the key choose."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Transactions:
    """A transactional producer (`transactional_id`): the sequencer's writer (one per
    process and consumer generation, all of its partitions in one transaction a round) or
    a partition's claim (agents/sequencer.py).

    `fence` starts it: once it has its producer id, every earlier producer with the same
    id, in any process, is fenced, and its open transaction aborted. `commit` writes
    records as one transaction. Kafka's failures come out as
    `Fenced` (this producer was replaced: stop writing) or `StoreUnavailable` (retry
    with a new producer)."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer,
                 transactional_id: str) -> None:
        self._settings = settings
        self._producer = producer
        self.transactional_id = transactional_id

    @classmethod
    async def fence_only(cls, settings: Settings, transactional_id: str) -> None:
        """Fence every producer of `transactional_id` (its open transaction is aborted)
        and let the id go: nothing writes with it from here on."""
        transactions = await cls.fence(settings, transactional_id)
        await transactions.close()

    @classmethod
    async def fence(cls, settings: Settings, transactional_id: str) -> Transactions:
        retry_concurrent_transactions_after(CONCURRENT_TXN_BACKOFF_S)
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            transactional_id=transactional_id,
            transaction_timeout_ms=int(settings.sequencer_transaction_timeout_s * 1000),
            request_timeout_ms=int(settings.sequencer_request_timeout_s * 1000),
            max_batch_size=512 * 1024,
            linger_ms=0,
            retry_backoff_ms=TXN_RETRY_BACKOFF_MS,
            client_id=transactional_id,
        )
        try:
            async with asyncio.timeout(settings.sequencer_request_timeout_s):
                await producer.start()
                await producer.begin_transaction()  # waits for the producer id: the fence
                await producer.abort_transaction()
        except BaseException as exc:
            await producer.stop()
            if isinstance(exc, CLIENT_ERRORS):
                raise StoreUnavailable(f"fencing {transactional_id}: {exc!r}") from exc
            raise
        return cls(settings, producer, transactional_id)

    async def commit(self, writes: list[Write]) -> list[int]:
        """Write `writes` in one transaction; the offset each write got, in order.

        Every write must be acked before the commit is asked for: aiokafka 0.14 commits
        a transaction whose batch failed (a batch that expired while its partition had no
        leader, or one refused with an error it does not retry, fails alone, and
        `commit_transaction` still sends EndTxn(COMMIT) once the batches are done). That
        would commit the state's position without the messages it covers: lost for good,
        and a hole in their conversations' seqs. Unacked, the transaction is never
        committed; the next fence aborts it."""
        producer = self._producer
        sent: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._settings.sequencer_request_timeout_s):
                await producer.begin_transaction()
                for w in writes:
                    sent.append(await producer.send(w.topic, w.value, w.key, w.partition))
                metas = await asyncio.gather(*sent)  # all written, none visible yet
                await producer.commit_transaction()
        except BaseException as exc:
            for future in sent:  # they fail with the transaction; nobody awaits them
                future.add_done_callback(_retrieve)
            if isinstance(exc, FENCED):
                raise Fenced(repr(exc)) from exc
            if isinstance(exc, CLIENT_ERRORS):
                raise StoreUnavailable(f"transaction failed: {exc!r}") from exc
            raise
        return [int(m.offset) for m in metas]

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self._settings.sequencer_request_timeout_s):
                await self._producer.stop()
        except CLIENT_ERRORS as exc:
            log.warning("closing transactional producer: %r", exc)


@contextlib.contextmanager
def probing(consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> Iterator[None]:
    """Fetch only `tps` inside the block, nothing after it: a probe's consumer lives long
    and would fetch its assigned partitions in the background. Partitions are added to the
    assignment, not swapped in, since aiokafka logs each new assignment (once a second
    in a web's log otherwise)."""
    if not tps <= consumer.assignment():
        consumer.assign(list(consumer.assignment() | tps))
    consumer.pause(*(consumer.assignment() - tps))
    consumer.resume(*tps)
    try:
        yield
    finally:
        consumer.pause(*consumer.assignment())


class OffsetProbe:
    """Finds the first committed record at or after an offset (a read_committed consumer
    of its own, so it never moves a consumer group's position)."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                          enable_auto_commit=False,
                                          isolation_level="read_committed",
                                          client_id=client_id)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except CLIENT_ERRORS as exc:
            raise StoreUnavailable(f"offset probe: {exc!r}") from exc

    async def stop(self) -> None:
        await self._consumer.stop()

    async def first_offset(self, topic: str, partition: int, offset: int) -> int:
        tp = TopicPartition(topic, partition)
        try:
            async with self._lock, asyncio.timeout(self._settings.sequencer_request_timeout_s):
                self._consumer.assign([tp])
                self._consumer.seek(tp, offset)
                while True:
                    batches = await self._consumer.getmany(tp, timeout_ms=500, max_records=1)
                    if batches.get(tp):
                        return int(batches[tp][0].offset)
        except CLIENT_ERRORS as exc:
            raise StoreUnavailable(f"offset probe: {exc!r}") from exc


class BacklogProbe:
    """How far behind the agents are, in time: the age of the oldest record that some
    agent's consumer group has not committed yet (0 when every group is at the end, or
    only transaction markers are left). The ingress admits new messages by it."""

    def __init__(self, settings: Settings, groups: dict[str, str]) -> None:
        self._settings = settings
        self._groups = groups  # consumer group -> the topic it reads
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                          client_id="imflow-backlog-probe")
        # a small fetch: only each partition's first record is wanted (Kafka still
        # returns a whole first batch when it is larger)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                          enable_auto_commit=False,
                                          isolation_level="read_committed",
                                          max_partition_fetch_bytes=1024,
                                          client_id="imflow-backlog-probe")
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            await self._admin.start()
            await self._consumer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            await self._consumer.stop()
            await self._admin.close()

    async def oldest_s(self) -> float:
        """Seconds since the oldest record not yet done by some agent was written."""
        try:
            async with asyncio.timeout(self._settings.produce_timeout_s):
                await self._start()
                behind: dict[TopicPartition, int] = {}  # the slowest group's position
                for group, topic in self._groups.items():
                    offsets = await self._admin.list_consumer_group_offsets(group)
                    for tp, meta in offsets.items():
                        if tp.topic == topic and meta.offset >= 0:
                            behind[tp] = min(behind.get(tp, meta.offset), meta.offset)
                if not behind:
                    return 0.0
                ends = await self._consumer.end_offsets(list(behind))
                todo = {tp: at for tp, at in behind.items() if at < ends[tp]}
                if not todo:
                    return 0.0
                first: list[int] = []  # the first undone record's timestamp per partition
                with probing(self._consumer, set(todo)):
                    for tp, at in todo.items():
                        self._consumer.seek(tp, at)
                    pending = set(todo)
                    while pending:  # the first fetch after a seek may come back empty
                        fetched = await self._consumer.getmany(*pending, timeout_ms=100)
                        for tp, records in fetched.items():
                            if records:
                                first.append(records[0].timestamp)
                                pending.discard(tp)
                        for tp in list(pending):  # only transaction markers were left
                            if await self._consumer.position(tp) >= ends[tp]:
                                pending.discard(tp)
        except CLIENT_ERRORS as exc:
            raise StoreUnavailable(f"backlog probe: {exc!r}") from exc
        return max(0.0, time.time() - min(first) / 1000) if first else 0.0
