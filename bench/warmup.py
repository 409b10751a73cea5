"""The JVM services' warm-up before the measured runs: load until their JIT compilers go
quiet.

Measured here (bench.breakdown, 1,000 msg/s for 20 s, again and again after
`make services`): Kafka's C2 compiler thread took 3.0 s of the broker's 10.2 CPU-s in the
third run, 2.0 s in the fourth, 0.8 s in the fifth, and HBase's and Thrift's 1.4-1.6 s
each in the third. On a 2-core box that CPU is taken from the pipeline: a benchmark that
starts on cold JVMs measures their compilers. So the bench runs load in rounds until
the compiler threads' share of the JVMs' CPU drops under a threshold (or a round limit),
and reports every round.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

from app.devstack import ROOT, Stack
from bench.stages import CLOCK_TICKS, cpu_seconds

COMPILER_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # /proc comm: 15 characters


def compiler_cpu_seconds(pid: int) -> float:
    """CPU time so far of a JVM's JIT compiler threads (from /proc/<pid>/task)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() not in COMPILER_THREADS:
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


async def warm_up(stack: Stack, jvms: dict[str, int], *, rate: float, round_s: float,
                  max_rounds: int, settled_share: float, pairs: int, workdir: Path,
                  env: dict[str, str]) -> dict[str, Any]:
    """Rounds of open-loop load at `rate`, back to back, until the JIT compilers took at
    most `settled_share` of the JVMs' CPU in a round; then the backlog is drained, so
    the first measured run starts on an idle pipeline."""
    from bench.run import pipeline_idle  # bench.run imports this module

    rounds: list[dict[str, float]] = []
    share = 1.0
    for _ in range(max_rounds):
        before = {pid: (cpu_seconds(pid), compiler_cpu_seconds(pid)) for pid in jvms.values()}
        loadgen = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.loadgen", "--urls", ",".join(stack.web_urls),
            "--tag", f"warm{uuid.uuid4().hex[:6]}", "--pairs", str(pairs),
            "--rate", str(rate), "--duration", str(round_s),
            "--out", str(workdir / "warmup.json"), cwd=ROOT, env=env)
        if await loadgen.wait() != 0:
            raise RuntimeError("the warm-up's load generator failed")
        cpu = sum(cpu_seconds(pid) - before[pid][0] for pid in jvms.values())
        jit = sum(compiler_cpu_seconds(pid) - before[pid][1] for pid in jvms.values())
        share = jit / max(cpu, 1e-9)
        rounds.append({"jvm_cpu_s": round(cpu, 2), "jit_cpu_s": round(jit, 2),
                       "jit_share": round(share, 3)})
        if share <= settled_share:
            break
    return {"rate": rate, "round_s": round_s, "rounds": rounds,
            "settled": share <= settled_share, "settled_share": settled_share,
            "drained_s": round(await pipeline_idle(stack), 1)}
