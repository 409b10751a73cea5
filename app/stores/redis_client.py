"""The one way imflow processes connect to Redis, a single server or a Redis Cluster.

A single server gets a blocking pool: under a burst, a request waits (up to
`redis_pool_timeout_s`) for a free connection instead of failing at once, and the pool
size bounds what one process asks of Redis. A cluster client (`redis_cluster`) keeps a
pool per node and routes each command by its key's slot.

On a cluster one Lua call may only touch keys of one slot: stores group their work with
`by_slot` and send the calls of a batch with `run_script`, one pipeline that reaches each
node once. Every store wears `redis_store`, which turns redis-py's "Redis did not answer"
errors into `StoreUnavailable`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeAlias, TypeGuard, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from app.errors import StoreUnavailable
from app.settings import Settings

RedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
Call = tuple[Sequence[str], Sequence[Any]]  # one script call: its KEYS and its ARGV
Item = TypeVar("Item")


def create_redis(settings: Settings) -> RedisClient:
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections,
            socket_timeout=settings.redis_pool_timeout_s + 5)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
    )
    return aioredis.Redis(connection_pool=pool)


def is_cluster(client: RedisClient) -> TypeGuard[aioredis.RedisCluster]:
    return isinstance(client, aioredis.RedisCluster)


def by_slot(client: RedisClient, items: Iterable[Item],
            key: Callable[[Item], str]) -> list[list[Item]]:
    """`items` in groups whose `key`s share a cluster slot, each in the given order (one
    group on a single server, where one call may touch any key)."""
    if not is_cluster(client):
        group = list(items)
        return [group] if group else []
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(key_slot(key(item).encode()), []).append(item)
    return list(groups.values())


def slot_chunks(client: RedisClient, items: Iterable[Item], key: Callable[[Item], str],
                size: int) -> list[list[Item]]:
    """`by_slot`'s groups cut into runs of at most `size` (one Lua call each, so a call
    never holds Redis long), in order."""
    return [group[start:start + size] for group in by_slot(client, items, key)
            for start in range(0, len(group), size)]


async def run_script(client: RedisClient, source: str, calls: Sequence[Call], *,
                     replica_acks: int = 0, replica_timeout_ms: int = 1000) -> list[Any]:
    """Run one Lua script once per call (each call's KEYS in one slot), all in one
    pipeline by the script's sha; the results in order.

    A pipeline holding a redis-py Script sends SCRIPT EXISTS before every execute; by sha
    it sends nothing extra, and when Redis does not know the script (a restart, a
    failover, SCRIPT FLUSH) it is loaded (on every master) and the whole pipeline runs
    again: the scripts are idempotent. With `replica_acks`, each node written to also
    answers a WAIT on the same connection, so the writes are on that many replicas when
    this returns (or StoreUnavailable): Redis replicates asynchronously and a failover
    could otherwise drop writes the master acknowledged."""
    if not calls:
        return []
    sha = _sha(source)
    if replica_acks > 0 and is_cluster(client):
        await client.initialize()  # the slot map, for WAIT's nodes (a no-op once known)
    for _ in range(2):
        try:
            async with client.pipeline(transaction=False) as pipe:
                for call_keys, args in calls:
                    # by name: redis-py blocks the `evalsha` method of cluster pipelines
                    pipe.execute_command("EVALSHA", sha, len(call_keys), *call_keys, *args)
                waits = _queue_waits(client, pipe, calls, replica_acks, replica_timeout_ms)
                results = await pipe.execute()
        except NoScriptError:
            await client.script_load(source)
            continue
        acked = results[len(calls):]
        if waits and min(int(n) for n in acked) < replica_acks:
            raise StoreUnavailable(f"writes reached {min(acked)} of {replica_acks} Redis "
                                   f"replicas within {replica_timeout_ms} ms")
        return list(results[:len(calls)])
    raise StoreUnavailable("Redis forgot a script twice in a row")


def _queue_waits(client: RedisClient, pipe: Any, calls: Sequence[Call], replica_acks: int,
                 timeout_ms: int) -> int:
    """Queue one WAIT per node the calls write to; how many."""
    if replica_acks <= 0:
        return 0
    if not is_cluster(client):
        pipe.execute_command("WAIT", replica_acks, timeout_ms)
        return 1
    nodes = {node.name: node for node in (node_of(client, call_keys[0]) for call_keys, _ in calls)}
    for node in nodes.values():
        pipe.execute_command("WAIT", replica_acks, timeout_ms, target_nodes=node)
    return len(nodes)


def node_of(client: aioredis.RedisCluster, key: str) -> ClusterNode:
    """The master that serves `key`'s slot now (after `client.initialize()`: a cluster
    client learns the slot map on its first command)."""
    node = client.get_node_from_key(key)
    if node is None:
        raise StoreUnavailable(f"no Redis Cluster node serves the slot of {key!r}")
    return node


@functools.lru_cache(maxsize=64)
def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


# What redis-py raises when Redis does not answer (a refused or dropped connection, a
# timeout, no free pooled connection in time), or a cluster cannot serve a slot yet (a
# master failed and its replica is not promoted yet; a slot moving).
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
              redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
              redis.exceptions.SlotNotCoveredError, redis.exceptions.ReadOnlyError)

C = TypeVar("C", bound=type)


def _translated(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except REDIS_DOWN as exc:
            raise StoreUnavailable(f"Redis did not answer: {exc!r}") from exc
    return call


def redis_store(cls: C) -> C:
    """Class decorator of a Redis store: its public coroutine methods raise
    `StoreUnavailable`, never redis-py's errors, so callers (the web, the agents) handle
    one error whatever the store."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, _translated(member))
    return cls
