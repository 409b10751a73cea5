"""Sequencer agent: `imflow.inbound` -> `imflow.messages`, one order per conversation.

Run: `faust -L uvloop -A agents.sequencer worker --without-web`. See agents/sequencing.py for the
decisions and the crash-safety argument, tables/sequencer_state.py for the state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError
from faust.types import EventT

from agents.base import DeadLetters, EventBatches, create_faust_app, retry_forever, topic
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


StateWrites = list[tuple[int, str, Any]]  # (changelog partition, key, value)
Outputs = list[tuple[SequencedRecord, int]]  # (record, partition)


async def _send(outputs: Outputs, writes: StateWrites) -> None:
    """Send sequenced records and state writes together; return once Kafka acked all."""
    try:
        producer = app.producer  # straight to the producer: Topic.send's per-record overhead
        # A record goes to its inbound partition: the key's default partition for records
        # the ingress wrote, and one partition per conversation in any case.
        futures = [
            await producer.send(settings.topic_messages, out.message.conversation_id.encode(),
                                out.model_dump_json().encode(), partition, None, None)
            for out, partition in outputs
        ]
        changelog = await state.send_writes(producer, writes)
        acked = await asyncio.gather(*futures, *changelog)
        state.mark_persisted(acked[len(futures):])
    except KafkaError as exc:
        raise StoreUnavailable(f"producing to {settings.topic_messages}: {exc!r}") from exc


async def decide_batch(events: Sequence[EventT]) -> tuple[Outputs, StateWrites]:
    """The batch's outputs and state writes, decided against the in-memory state."""
    overlay: dict[str, Any] = {}
    writes: StateWrites = []
    outputs: Outputs = []

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
            outputs.append((decision.output, msg.partition))
        for key, value in decision.writes:
            overlay[key] = value
            writes.append((msg.partition, key, value))
    return outputs, writes


@app.agent(inbound_topic)
async def sequence(stream: Any) -> None:
    """One Kafka round trip per batch under load: batch N's outputs go out together with
    batch N-1's state writes. Rule 1 holds (N-1's outputs were acked in the previous
    round), and a batch's offsets are acked only once its state writes are acked. When
    no batch is waiting, the state goes out at once, so it never lingers unsent."""
    batches = EventBatches(stream, settings.agent_batch_max, settings.agent_batch_linger_s)
    unsent: StateWrites = []  # the previous batch's writes, applied in memory only
    unacked: list[EventT] = []  # its events
    async for events in batches:
        outputs, writes = await decide_batch(events)
        # A retry resends the same records (same seqs); the sinks are idempotent.
        await retry_forever("publish sequenced batch", partial(_send, outputs, unsent))
        await batches.ack(unacked)
        state.apply(writes)
        unsent, unacked = writes, list(events)
        if not batches.waiting():
            await retry_forever("write sequencer state", partial(_send, [], unsent))
            await batches.ack(unacked)
            unsent, unacked = [], []


@app.timer(interval=60.0)
async def prune_dedup_window() -> None:
    active = {tp.partition for tp in app.assignor.assigned_actives()
              if tp.topic == settings.topic_inbound}
    pruned = prune_dedup(state, window_s=settings.dedup_window_s, active=active)
    if pruned:
        log.info("pruned %d dedup entries older than %ss", pruned, settings.dedup_window_s)
