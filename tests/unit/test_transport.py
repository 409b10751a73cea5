"""The agents' Kafka consumer gets the fetch wait from settings, not Faust's fixed 1.5 s,
and reads committed records only (the sequencer writes in transactions)."""

from __future__ import annotations

from pathlib import Path

from agents.base import create_faust_app
from agents.transport import ShortFetchConsumerThread, ShortFetchTransport
from app.settings import Settings


async def test_agent_consumers_use_the_configured_fetch_wait(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, agent_fetch_max_wait_ms=77,
                        faust_data_dir=str(tmp_path))
    app = create_faust_app("fetch-wait", settings)
    assert isinstance(app.transport, ShortFetchTransport)
    thread = app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, ShortFetchConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 77
    assert consumer._isolation_level == "read_committed"
