"""Text lines for the analyses that train several short runs (``vs_full``, ``lr_sweep``, ``placement``) outside a
notebook: what each run is when it begins, a progress line every few seconds while it trains and how it ended, so
a call that takes minutes shows it is alive. Inside a Jupyter kernel their views show this instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ....frontend import in_kernel
from ...training.callbacks import Callback
from ...training.reporting import loss_change, progress_line

if TYPE_CHECKING:  # pragma: no cover
    from ...training.run import TrainRun


class StepLines(Callback):
    """Prints ``label: step 3/20 · loss …`` at most every ``interval`` seconds of a run, and its end line."""

    def __init__(self, file: TextIO | None = None, interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.file, self.interval, self.clock = file, interval, clock
        self.label = "run"
        self._last = -float("inf")

    def say(self, text: str) -> None:
        print(text, file=self.file or sys.stdout, flush=True)

    def on_train_begin(self, run: TrainRun) -> None:
        self._last = self.clock()  # the first line comes after `interval` seconds: short runs print their end only

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        now = self.clock()
        if now - self._last >= self.interval and record["step"] < run.max_steps:
            self._last = now
            self.say(f"  {self.label}: {progress_line(run, record)}")

    def on_train_end(self, run: TrainRun) -> None:
        change = loss_change([r["loss"] for r in run.history])
        ended = "" if run.state == "finished" else f" ({run.state}: {run.message})"
        self.say(f"  {self.label}: {run.step} steps in {run.seconds:.1f} s" + (f", {change}" if change else "")
                 + ended)


def lines_unless_watched(callbacks: Sequence[Callback] | None, make: Callable[[], Any]) -> list[Callback]:
    """``callbacks`` as a list; ``None`` outside a Jupyter kernel: ``[make()]`` (text lines). ``[]``: silence."""
    if callbacks is not None or in_kernel():
        return list(callbacks or [])
    return [make()]
