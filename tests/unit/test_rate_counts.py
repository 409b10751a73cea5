"""The send rate limit's counting (app/stores/ratelimit.py WindowCounts): a process
enforces the limit exactly on its own sends, adds the other processes' sends as of the
last sync, starts over each second, and keeps sends it could not share for the next
sync. A fake clock; the Redis side is in tests/integration/test_rate_limit.py."""

from __future__ import annotations

from app.stores.ratelimit import WindowCounts


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_process_refuses_the_send_past_the_limit_until_the_next_second() -> None:
    clock = Clock(100.25)
    counts = WindowCounts(3, clock)
    assert [counts.retry_after("u") for _ in range(3)] == [None, None, None]
    assert counts.retry_after("u") == 0.75  # seconds until the next window
    assert counts.retry_after("v") is None  # per user
    clock.now = 101.0
    assert counts.retry_after("u") is None


def test_the_other_processes_sends_count_once_synced() -> None:
    counts = WindowCounts(5, Clock(100.0))
    counts.retry_after("u")
    window, sends = counts.take_unsynced()
    assert sends == {"u": 1}
    counts.synced(window, {"u": 4})  # three from other processes
    assert counts.retry_after("u") is None  # 1 + 3 + this one = 5
    assert counts.retry_after("u") is not None


def test_sends_that_did_not_reach_redis_are_shared_at_the_next_sync() -> None:
    counts = WindowCounts(5, Clock(100.0))
    counts.retry_after("u")
    window, sends = counts.take_unsynced()
    counts.retry_after("u")
    counts.sync_failed(window, sends)
    assert counts.take_unsynced() == (100, {"u": 2})


def test_a_sync_of_a_past_window_changes_nothing() -> None:
    clock = Clock(100.9)
    counts = WindowCounts(2, clock)
    counts.retry_after("u")
    window, sends = counts.take_unsynced()
    clock.now = 101.1
    assert counts.retry_after("u") is None  # a new window: counts start over
    counts.synced(window, {"u": 50})
    counts.sync_failed(window, sends)
    assert counts.retry_after("u") is None
    assert counts.take_unsynced() == (101, {"u": 2})
