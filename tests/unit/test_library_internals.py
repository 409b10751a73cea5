"""The Faust and aiokafka internals imflow relies on, checked so that an upgrade that
moves them fails here, loudly, instead of in a sequencer under load.

pyproject pins both to the tested minor; these say what the pins protect.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import aiokafka
import faust
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from agents.base import create_faust_app
from app.settings import Settings


def test_the_pinned_versions_are_the_tested_ones() -> None:
    assert faust.__version__.startswith("0.15."), faust.__version__
    assert aiokafka.__version__.startswith("0.14."), aiokafka.__version__


def test_faust_still_calls_add_gap_as_the_override_expects() -> None:
    """agents/transport.py replaces `_add_gap(tp, offset_from, offset_to)`; the fetch loop
    must still call it with the offset of the record about to be handed out."""
    assert list(inspect.signature(FaustConsumer._add_gap).parameters) == [
        "self", "tp", "offset_from", "offset_to"]
    drain = inspect.getsource(FaustConsumer._drain_messages)
    assert "self._add_gap(tp, r_offset + 1, offset)" in drain


def test_the_consumer_keeps_the_bookkeeping_the_override_uses(tmp_path: Path) -> None:
    app = create_faust_app("internals", Settings(_env_file=None, faust_data_dir=str(tmp_path)))
    consumer = app.consumer
    for name in ("_committed_offset", "_gap", "_acked", "_acked_index", "_read_offset"):
        assert hasattr(consumer, name), name
    # the sequencer drops events fetched in an older consumer generation: Faust sets
    # the app's generation on every assignment and stamps it on each message
    assert isinstance(app.consumer_generation_id, int)
    assert "generation_id" in inspect.signature(faust.types.Message).parameters


def test_aiokafka_consumer_keeps_the_fields_the_transport_sets() -> None:
    """agents/transport.py sets them on the consumer Faust built, before it starts."""
    source = inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in source
    assert "self._isolation_level = isolation_level" in source
    assert "_create_worker_consumer" in dict(inspect.getmembers(AIOKafkaConsumerThread))


def test_aiokafka_resets_positions_through_the_offset_request_the_transport_wraps() -> None:
    """`refresh_metadata_on_stale_leader` wraps `Fetcher._proc_offset_request`: the
    position reset must still go through it and still swallow its error without a
    metadata refresh of its own (else the wrapper is moot: drop it)."""
    from aiokafka.consumer.fetcher import Fetcher

    reset = inspect.getsource(Fetcher._update_fetch_positions)
    assert "await self._proc_offset_request(node_id, topic_data)" in reset
    assert "force_metadata_update" not in reset
    assert list(inspect.signature(Fetcher._proc_offset_request).parameters) == [
        "self", "node_id", "topic_data"]


def test_aiokafka_retries_a_concurrent_transaction_after_the_constant_imflow_sets() -> None:
    """`retry_concurrent_transactions_after` sets `sender.BACKOFF_OVERRIDE`: the first
    AddPartitionsToTxn of a transaction must still wait that module constant (read when
    it retries) after CONCURRENT_TRANSACTIONS, not `retry_backoff_ms`."""
    from aiokafka.producer import sender

    from app.stores.kafka import retry_concurrent_transactions_after

    handler = inspect.getsource(sender.AddPartitionsToTxnHandler.handle_response)
    assert "error_type is ConcurrentTransactions" in handler
    assert "return BACKOFF_OVERRIDE" in handler
    before = sender.BACKOFF_OVERRIDE
    try:
        retry_concurrent_transactions_after(0.002)
        assert sender.BACKOFF_OVERRIDE == 0.002
    finally:
        sender.BACKOFF_OVERRIDE = before


def test_aiokafka_builds_each_fetch_from_the_fields_the_pacing_sets() -> None:
    """`pace_fetches` wraps `Fetcher._proc_fetch_request` and changes the fetcher's min
    bytes and wait between fetches: each request must still be built from them anew,
    and its records must still come back through the wrapped call's truthy result."""
    from aiokafka.consumer.fetcher import Fetcher

    build = inspect.getsource(Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms,\n                self._fetch_min_bytes," in build
    routine = inspect.getsource(Fetcher._fetch_requests_routine)
    assert "self._proc_fetch_request(assignment, node_id, request)" in routine
    assert "has_new_data = any(fut.result() for fut in done_pending)" in routine
