"""A sequencer transaction is committed only once every record in it is written.

aiokafka 0.14 fails a batch on its own (it expired while its partition had no leader, or
the broker refused it with an error aiokafka does not retry) and still commits the
transaction around it. Committed, the state's new position would cover messages that
were never written: lost, with a hole in their conversations' seqs. The fake producer
stands in for aiokafka's: what is checked is the order of imflow's own calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import NotLeaderForPartitionError

from app.errors import StoreUnavailable
from app.settings import Settings
from app.stores.kafka import Transactions, Write


class Meta:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class FakeProducer:
    """Acks the writes to every partition but `leaderless`, whose batch fails."""

    def __init__(self, leaderless: int | None) -> None:
        self.leaderless = leaderless
        self.calls: list[str] = []
        self._offset = 0

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def send(self, topic: str, value: bytes, key: bytes | None,
                   partition: int | None) -> asyncio.Future[Any]:
        self.calls.append(f"send {topic}[{partition}]")
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if partition == self.leaderless:
            loop = asyncio.get_running_loop()
            loop.call_soon(done.set_exception, NotLeaderForPartitionError())
        else:
            self._offset += 1
            done.set_result(Meta(self._offset))
        return done

    async def commit_transaction(self) -> None:
        self.calls.append("commit")


WRITES = [Write("messages", b"c", b"m", 0), Write("state", b"k", b"s", 0),
          Write("messages", b"d", b"n", 1)]


async def test_a_failed_write_leaves_the_transaction_uncommitted() -> None:
    producer = FakeProducer(leaderless=1)
    transactions = Transactions(Settings(_env_file=None), producer, "seq-w")  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable, match="NotLeaderForPartition"):
        await transactions.commit(WRITES)
    assert "commit" not in producer.calls
    assert producer.calls[0] == "begin"


async def test_the_commit_comes_after_every_write_is_acked() -> None:
    producer = FakeProducer(leaderless=None)
    transactions = Transactions(Settings(_env_file=None), producer, "seq-w")  # type: ignore[arg-type]
    assert await transactions.commit(WRITES) == [1, 2, 3]
    assert producer.calls[-1] == "commit"
    assert producer.calls.count("commit") == 1
