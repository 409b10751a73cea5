"""bench/picture.py draws the rate search's latency percentiles into a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.picture import draw, e2e_steps


def step(rate: float, p99: float, sustained: bool) -> dict[str, Any]:
    return {"rate_offered": rate, "sustained": sustained, "inbox_p50_ms": p99 / 3,
            "inbox_p99_ms": p99, "push_p99_ms": p99 * 1.1, "history_p99_ms": p99 * 0.9}


RESULTS = {"machine": {"cpus": 2, "when": "2026-12-02 01:40"}, "e2e_msgs_per_s": 800,
           "e2e_at_1000": step(1000, 1200, False),
           "e2e_rate_search": [step(800, 661, True), step(900, 0.0, False)]}


def test_the_steps_are_ordered_by_offered_rate() -> None:
    assert [s["rate_offered"] for s in e2e_steps(RESULTS)] == [800, 900, 1000]


def test_it_writes_a_png(tmp_path: Path) -> None:
    path = draw(RESULTS, tmp_path / "out" / "latest.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
