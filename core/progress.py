"""One progress display across the commands of a run (`make demo`): each progress line starts with the stage the
Makefile names (`MEDCITE_STAGE`, e.g. "3/5 judges"), gives items per second and the stage's time left, and, where
the Makefile set `MEDCITE_RUN_START` (epoch seconds), the time since the run began. Standard library only.

    [3/5 judges] faithfulness: 120/581 steps, 2.31 steps/s, ~3:19 left (9:41 into the run); loss 0.36
"""

from __future__ import annotations

import os
import time


def clock(seconds: float) -> str:
    minutes, s = divmod(int(max(seconds, 0)), 60)
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def stage_prefix() -> str:
    """`[3/5 judges] ` under `make demo`, else empty."""
    stage = os.environ.get("MEDCITE_STAGE", "").strip()
    return f"[{stage}] " if stage else ""


def run_elapsed() -> str:
    """` (9:41 into the run)` where the run's start is known, else empty."""
    start = os.environ.get("MEDCITE_RUN_START", "")
    try:
        return f" ({clock(time.time() - float(start))} into the run)" if start else ""
    except ValueError:
        return ""


class Meter:
    """Items per second and the time left for a count that may resume part-way: the rate counts only what this
    process did since its first reading."""

    def __init__(self, total: int, unit: str, what: str = "") -> None:
        self.total, self.unit, self.what = total, unit, what
        self.started: float | None = None
        self.first = 0

    def line(self, done: int, note: str = "") -> str:
        now = time.monotonic()
        if self.started is None:
            self.started, self.first = now, done
        rate = (done - self.first) / (now - self.started) if done > self.first and now > self.started else 0.0
        parts = [f"{done}/{self.total} {self.unit}"]
        if rate:
            parts += [f"{rate:.2f} {self.unit}/s", f"~{clock((self.total - done) / rate)} left"]
        head = f"{self.what}: " if self.what else ""
        return f"{stage_prefix()}{head}{', '.join(parts)}{run_elapsed()}" + (f"; {note}" if note else "")
