"""Sequencer agent: `imflow.inbound` -> `imflow.messages`, one order per conversation.

Run: `faust -A agents.sequencer worker --without-web`. See agents/sequencing.py for the
decisions and the crash-safety argument, tables/sequencer_state.py for the state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError
from faust.types import EventT

from agents.base import DeadLetters, create_faust_app, event_batches, retry_forever, topic
from agents.sequencing import decide
from app.errors import RecordError, StoreUnavailable
from app.models import SequencedRecord, parse_inbound
from app.settings import get_settings
from tables.sequencer_state import create_state_table, prune_dedup

log = logging.getLogger(__name__)

settings = get_settings()
app = create_faust_app("sequencer", settings)
state = create_state_table(app, settings)
inbound_topic = topic(app, settings.topic_inbound)
dead_letters = DeadLetters(app, settings)


async def _publish(outputs: list[SequencedRecord]) -> None:
    """Send the batch's outputs and wait until Kafka acked every one."""
    try:
        producer = app.producer  # straight to the producer: Topic.send's per-record overhead
        futures = [
            await producer.send(settings.topic_messages, out.message.conversation_id.encode(),
                                out.model_dump_json().encode(), None, None, None)
            for out in outputs
        ]
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise StoreUnavailable(f"producing to {settings.topic_messages}: {exc!r}") from exc


async def _write_state(writes: list[tuple[int, str, Any]]) -> None:
    try:
        await state.write_batch(app.producer, writes)
    except KafkaError as exc:
        raise StoreUnavailable(f"writing the sequencer's changelog: {exc!r}") from exc


async def sequence_batch(events: Sequence[EventT]) -> None:
    overlay: dict[str, Any] = {}
    writes: list[tuple[int, str, Any]] = []
    outputs: list[SequencedRecord] = []

    def get(key: str) -> Any:
        return overlay[key] if key in overlay else state.get(key)

    for event in events:
        msg = event.message
        try:
            record = parse_inbound(msg.value, max_body_bytes=settings.max_body_bytes)
        except RecordError as exc:
            await dead_letters.send(event, exc.reason)
            continue
        decision = decide(record, partition=msg.partition, offset=msg.offset,
                          record_ts=int(msg.timestamp * 1000), get=get,
                          read_threshold=settings.read_fanout_threshold)
        if decision.status == "rejected":
            await dead_letters.send(event, decision.reason)  # acked before the state write
        if decision.output is not None:
            outputs.append(decision.output)
        for key, value in decision.writes:
            overlay[key] = value
            writes.append((msg.partition, key, value))

    if outputs:
        # Rule 1: outputs are acked before the state that says "done" is written.
        # A retry resends the same records (same seqs); the sinks are idempotent.
        await retry_forever("publish sequenced batch", lambda: _publish(outputs))
    if writes:
        # Acked before the batch's offsets may be committed.
        await retry_forever("write sequencer state", lambda: _write_state(writes))


@app.agent(inbound_topic)
async def sequence(stream: Any) -> None:
    async for events in event_batches(stream, settings.agent_batch_max):
        await sequence_batch(events)


@app.timer(interval=60.0)
async def prune_dedup_window() -> None:
    active = {tp.partition for tp in app.assignor.assigned_actives()
              if tp.topic == settings.topic_inbound}
    pruned = prune_dedup(state, window_s=settings.dedup_window_s, active=active)
    if pruned:
        log.info("pruned %d dedup entries older than %ss", pruned, settings.dedup_window_s)
