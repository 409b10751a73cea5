"""A Faust agent that does nothing with `imflow.messages`: the raw limit of one Faust
agent on this machine, for bench/stages.py. Built like the real agents (same factory)."""

from __future__ import annotations

from typing import Any

from agents.base import create_faust_app, topic
from app.settings import get_settings

settings = get_settings()
app = create_faust_app("empty-agent", settings)


@app.agent(topic(app, settings.topic_messages), name="empty-agent")
async def consume(stream: Any) -> None:
    async for _ in stream.events():
        pass
