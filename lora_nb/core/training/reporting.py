"""Text progress for terminal IPython and scripts: a training callback that prints a few lines.

It prints where the run trains, a progress line at most every ``interval`` seconds, each
evaluation, and how the run ended. The line format is shared with the live dashboard. ``lora_nb.train``
called from Python outside a Jupyter kernel (a script, terminal IPython) gets one unless it is given its own
callbacks (``console_unless_watched``), so a long call shows it is alive, as ``%lora train`` does there.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from ...frontend import in_kernel
from ..smoothing import Ema
from .callbacks import Callback
from .capacity import Capacity, short_count

if TYPE_CHECKING:  # pragma: no cover
    from .run import TrainRun


def format_eta(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` for a duration, ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def eta_seconds(run: TrainRun, record: dict) -> float | None:
    """Remaining time from the mean step time so far."""
    step = record["step"]
    return (run.max_steps - step) * record["time"] / step if step else None


def progress_line(run: TrainRun, record: dict, smoothed: float | None = None) -> str:
    """``step 120/1000 · loss 1.234 (avg 1.301) · lr 2.0e-04 · 812 tokens/s · ETA 1:10`` (fp16 runs: and
    ``· 3 skipped (fp16 overflow)`` once the loss scaler skipped a step)."""
    parts = [f"step {record['step']}/{run.max_steps}", f"loss {record['loss']:.4g}"]
    if smoothed is not None:
        parts[-1] += f" (avg {smoothed:.4g})"
    parts.append(f"lr {record['lr']:.1e}")
    if "tokens_per_s" in record:
        parts.append(f"{record['tokens_per_s']:,.0f} tokens/s")
        if "padding" in record:
            parts[-1] += f" ({record['padding']:.0%} padding)"
    else:
        parts.append(f"{record['samples_per_s']:,.1f} samples/s")
    if record.get("skipped_steps"):  # fp16: updates the loss scaler skipped (overflowing gradients)
        parts.append(f"{record['skipped_steps']} skipped (fp16 overflow)")
    parts.append(f"ETA {format_eta(eta_seconds(run, record))}")
    if record.get("supervised_tokens") and getattr(run, "trainable", 0):
        gauge = Capacity(run.trainable, record["supervised_tokens"])
        parts.append(f"{short_count(gauge.params)} params / {short_count(gauge.tokens)} supervised tokens"
                     + (" (below 1 per token: capacity may run out)" if gauge.below_rule else ""))
    return " · ".join(parts)


def begin_line(run: TrainRun) -> str:
    s = run.settings
    batch = f"batch {s.batch_size}" + (f"×{s.grad_accum}" if s.grad_accum > 1 else "")
    return (f"training adapter `{run.adapter}` on {run.where}: {run.max_steps} steps, {batch}, lr {s.lr:g}, "
            f"{s.schedule} schedule; data: {run.data}")


def loss_ends(losses: list[float]) -> tuple[float, float, int]:
    """``(first, last, k)``: the mean loss of the first ``k`` and of the last ``k`` steps, ``k`` a quarter of the run
    (1 to 20 steps, never overlapping), so one noisy batch at either end cannot make a run look better or worse than
    it went."""
    n = len(losses)
    k = max(1, min(20, (n + 3) // 4, n // 2))
    return sum(losses[:k]) / k, sum(losses[-k:]) / k, k


def loss_change(losses: list[float]) -> str:
    """``loss 4.562 → 4.545 (means of the first and last 2 steps)``; ``""`` for a run without steps."""
    if not losses:
        return ""
    first, last, k = loss_ends(losses)
    if len(losses) == 1:
        return f"loss {first:.4g}"
    means = "first and last step" if k == 1 else f"means of the first and last {k} steps"
    return f"loss {first:.4g} → {last:.4g} ({means})"


def end_line(run: TrainRun) -> str:
    """``finished: 40/40 steps …``; the state said once (``stopped at step 277/3000; …``, not ``stopped: stopped``)."""
    return run.message if run.message.startswith(run.state) else f"{run.state}: {run.message}"


class ConsoleReporter(Callback):
    """Prints training progress as text (terminal IPython, scripts), throttled by time."""

    def __init__(self, file: TextIO | None = None, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, progress: bool = True) -> None:
        """``progress=False``: only the first lines, evaluations and the end (a background run at a prompt)."""
        self.file, self.interval, self.clock, self.progress = file, interval, clock, progress
        self._last = -float("inf")
        self._ema = Ema()
        self._plan_after_step = False
        self.begun = threading.Event()  # set once the first lines are printed (a background caller may wait)

    def _print(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def on_train_begin(self, run: TrainRun) -> None:
        self._print(begin_line(run))
        plan = getattr(run, "memory_plan", None)
        self._plan_after_step = plan is not None and plan.pending  # measured on the first step: shown after it
        if plan is not None and not plan.pending:
            self._print(plan.line())
        self.begun.set()

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if self._plan_after_step:
            self._plan_after_step = False
            self._print(run.memory_plan.line())
        smoothed = self._ema.add(record["loss"])
        now = self.clock()
        if self.progress and (now - self._last >= self.interval or record["step"] == run.max_steps):
            self._last = now
            self._print(progress_line(run, record, smoothed))

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        self._print(f"eval at step {record['step']}: loss {record['eval_loss']:.4g}")

    def on_train_end(self, run: TrainRun) -> None:
        self._print(end_line(run))


def console_unless_watched(callbacks: list[Callback] | None, background: bool | None) -> list[Callback] | None:
    """``callbacks`` as given; ``None`` outside a Jupyter kernel: a ``ConsoleReporter`` (a progress line every 2 s,
    or, for a background run, its first lines and its end). Pass ``callbacks=[]`` for no output."""
    if callbacks is not None or in_kernel():
        return callbacks
    return [ConsoleReporter(progress=not background)]
