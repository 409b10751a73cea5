"""Admission bounds the messages a web process has in flight, from admission to answer,
and refuses past the bound at once (`Admission.admitted`)."""

from __future__ import annotations

import contextlib

import pytest

from app.errors import Overloaded
from app.settings import Settings
from app.web.admission import Admission


def admission(**values: object) -> Admission:
    settings = Settings(_env_file=None, secret="x" * 32, **values)  # type: ignore[arg-type]
    return Admission(settings, probe=None)


def test_past_the_bound_a_message_is_refused_until_one_in_flight_is_answered() -> None:
    gate = admission(ingress_max_in_flight=2)
    with contextlib.ExitStack() as in_flight:
        in_flight.enter_context(gate.admitted())
        in_flight.enter_context(gate.admitted())
        with pytest.raises(Overloaded, match="2 messages in flight") as refused:
            in_flight.enter_context(gate.admitted())
        assert refused.value.retry_after == 1
    with gate.admitted(), gate.admitted():
        pass  # both answered: two fit again


def test_a_request_that_fails_leaves_the_flight() -> None:
    gate = admission(ingress_max_in_flight=1)
    with pytest.raises(ValueError), gate.admitted():
        raise ValueError("bad input")
    with gate.admitted():
        pass


def test_the_backlog_and_the_loop_lag_refuse_before_anything_is_counted() -> None:
    gate = admission(ingress_max_in_flight=1, admission_max_backlog_s=2.0)
    gate.backlog_s = 2.5
    with pytest.raises(Overloaded, match=r"2\.5s behind"), gate.admitted():
        pytest.fail("a refused message must not run")
    gate.backlog_s = 0.0
    gate.loop_lag_s = 0.6
    with pytest.raises(Overloaded, match="600 ms behind"), gate.admitted():
        pytest.fail("a refused message must not run")
    gate.loop_lag_s = 0.0
    with gate.admitted():
        pass  # the refusals took no place in flight
