"""The ingress's memoised partitioner must place keys exactly as Kafka's default does."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from app.stores.kafka import key_partitioner

KEYS = [b"u:alice:bob", b"g:team", b"", b"g:" + b"x" * 64, "u:\u00e9:z".encode()]


@pytest.mark.parametrize("partitions", [1, 3, 8, 12])
def test_same_partition_as_kafka_default(partitions: int) -> None:
    all_partitions = list(range(partitions))
    for key in KEYS + [f"u:a{i}:b{i}".encode() for i in range(200)]:
        expected = DefaultPartitioner()(key, all_partitions, all_partitions)
        assert key_partitioner(key, all_partitions, all_partitions) == expected
        # memoised per key, still right when the partition count changes
        assert key_partitioner(key, all_partitions, all_partitions) == expected


def test_no_key_picks_an_available_partition() -> None:
    assert key_partitioner(None, [0, 1, 2], [2]) == 2
