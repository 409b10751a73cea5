"""The ingress refuses at once where its last send failed, and finds the target back
through one probe at a time (`FailingTargets`)."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import StoreUnavailable
from app.stores.kafka import FailingTargets


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fail(targets: FailingTargets, target: object) -> None:
    with pytest.raises(TimeoutError), targets.trying(target):
        raise TimeoutError


def test_a_failed_partition_is_refused_at_once_and_others_still_go_out() -> None:
    clock = Clock()
    targets = FailingTargets(0.5, clock)
    fail(targets, ("t", 1))
    clock.now += 0.4
    with pytest.raises(StoreUnavailable, match=r"t\[1\] failed 0.4s ago"), \
            targets.trying(("t", 1)):
        pytest.fail("a refused send must not run")
    with targets.trying(("t", 2)):
        pass  # another partition is not refused


def test_one_probe_at_a_time_and_its_success_opens_the_target() -> None:
    clock = Clock()
    targets = FailingTargets(0.5, clock)
    fail(targets, None)
    clock.now += 0.5
    with targets.trying(None):  # the probe
        with pytest.raises(StoreUnavailable), targets.trying(None):
            pytest.fail("a second send while the probe is out must be refused")
    with targets.trying(None), targets.trying(None):
        pass  # open again: sends run side by side


def test_a_failed_probe_restarts_the_wait() -> None:
    clock = Clock()
    targets = FailingTargets(0.5, clock)
    fail(targets, ("t", 0))
    clock.now += 0.6
    fail(targets, ("t", 0))  # the probe fails
    clock.now += 0.3
    with pytest.raises(StoreUnavailable), targets.trying(("t", 0)):
        pytest.fail("refused: the failed probe was 0.3 s ago")
    clock.now += 0.2
    with targets.trying(("t", 0)):
        pass


def test_a_cancelled_send_does_not_mark_the_target_down() -> None:
    targets = FailingTargets(0.5, Clock())
    with pytest.raises(asyncio.CancelledError), targets.trying(("t", 0)):
        raise asyncio.CancelledError
    with targets.trying(("t", 0)), targets.trying(("t", 0)):
        pass  # not refused, no probe
