"""Text progress for terminal IPython and scripts: a training callback that prints a few lines.

It prints where the run trains, a progress line at most every ``interval`` seconds, each
evaluation, and how the run ended. The line format is shared with the live dashboard.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .callbacks import Callback
from .capacity import Capacity, short_count


def format_eta(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` for a duration, ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def eta_seconds(run: Any, record: dict) -> float | None:
    """Remaining time from the mean step time so far."""
    step = record["step"]
    return (run.max_steps - step) * record["time"] / step if step else None


def progress_line(run: Any, record: dict, smoothed: float | None = None) -> str:
    """``step 120/1000 · loss 1.234 (avg 1.301) · lr 2.0e-04 · 812 tokens/s · ETA 1:10``."""
    parts = [f"step {record['step']}/{run.max_steps}", f"loss {record['loss']:.4g}"]
    if smoothed is not None:
        parts[-1] += f" (avg {smoothed:.4g})"
    parts.append(f"lr {record['lr']:.1e}")
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:,.0f} tokens/s")
    else:
        parts.append(f"{record['samples_per_s']:,.1f} samples/s")
    parts.append(f"ETA {format_eta(eta_seconds(run, record))}")
    if record.get("supervised_tokens") and getattr(run, "trainable", 0):
        gauge = Capacity(run.trainable, record["supervised_tokens"])
        parts.append(f"{short_count(gauge.params)} params / {short_count(gauge.tokens)} supervised tokens"
                     + (" (below 1 per token: capacity may run out)" if gauge.below_rule else ""))
    return " · ".join(parts)


def begin_line(run: Any) -> str:
    s = run.settings
    batch = f"batch {s.batch_size}" + (f"×{s.grad_accum}" if s.grad_accum > 1 else "")
    return (f"training adapter `{run.adapter}` on {run.where}: {run.max_steps} steps, {batch}, lr {s.lr:g}, "
            f"{s.schedule} schedule; data: {run.data}")


def end_line(run: Any) -> str:
    return f"{run.state}: {run.message}"


class Ema:
    """Debiased exponential moving average (TensorBoard-style smoothing); ``add`` returns the new mean."""

    def __init__(self, beta: float = 0.9) -> None:
        self.beta, self._sum, self._weight = beta, 0.0, 0.0

    def add(self, value: float) -> float:
        self._sum = self.beta * self._sum + (1.0 - self.beta) * value
        self._weight = self.beta * self._weight + (1.0 - self.beta)
        return self._sum / self._weight


class ConsoleReporter(Callback):
    """Prints training progress as text (terminal IPython, scripts), throttled by time."""

    def __init__(self, file: TextIO | None = None, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.file, self.interval, self.clock = file, interval, clock
        self._last = -float("inf")
        self._ema = Ema()

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def on_train_begin(self, run: Any) -> None:
        self._print(begin_line(run))
        if getattr(run, "memory_plan", None) is not None:
            self._print(run.memory_plan.line())

    def on_step_end(self, run: Any, record: dict) -> None:
        smoothed = self._ema.add(record["loss"])
        now = self.clock()
        if now - self._last >= self.interval or record["step"] == run.max_steps:
            self._last = now
            self._print(progress_line(run, record, smoothed))

    def on_evaluate(self, run: Any, record: dict) -> None:
        self._print(f"eval at step {record['step']}: loss {record['eval_loss']:.4g}")

    def on_train_end(self, run: Any) -> None:
        self._print(end_line(run))
