"""`make bench`'s picture: send->sink latency percentiles against the offered rate of its
rate search, written next to the results (bench/results/latest.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERIES = (("inbox_p50_ms", "inbox p50", "-"), ("inbox_p99_ms", "inbox p99", "-"),
          ("push_p99_ms", "push p99", "--"), ("history_p99_ms", "history p99", ":"))


def e2e_steps(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every e2e run of the bench (the fixed-rate one and the rate search), by rate."""
    steps = [results["e2e_at_1000"], *results.get("e2e_rate_search", [])]
    return sorted(steps, key=lambda s: float(s["rate_offered"]))


def draw(results: dict[str, Any], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    steps = e2e_steps(results)
    rates = [float(s["rate_offered"]) for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key, label, style in SERIES:
        ax.plot(rates, [max(float(s[key]), 0.1) for s in steps], style, marker="o",
                label=label)
    half = max(5.0, (max(rates) - min(rates)) * 0.02)  # of a red band: not sustained
    for s in steps:
        if not s["sustained"]:
            ax.axvspan(float(s["rate_offered"]) - half, float(s["rate_offered"]) + half,
                       color="red", alpha=0.15)
    ax.set_xlim(min(rates) - 5 * half, max(rates) + 5 * half)
    ax.axhline(50, color="grey", linewidth=0.8)
    ax.text(rates[0], 55, "target: p99 send->inbox <= 50 ms", fontsize=8, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (one-to-one messages/s); red: not sustained")
    ax.set_ylabel("send -> sink latency (ms)")
    machine = results.get("machine", {})
    ax.set_title(f"imflow bench, {machine.get('cpus', '?')} cpus, {machine.get('when', '')}:"
                 f" e2e_msgs_per_s {results.get('e2e_msgs_per_s', '?')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
