"""Training callbacks: how anything (console, live widgets, tests) watches a run.

The training loop displays nothing itself; it calls these hooks. A hook runs on the
training thread, so it must be quick: views throttle themselves (≤ 5 updates/s).
A hook that raises an ``Exception`` is reported once (a warning with its traceback) and detached,
and the run goes on: a broken view never costs a user their training. A callback the run depends
on (``essential = True``, e.g. the multi-process synchroniser) ends the run instead. To stop a run
from a hook, call ``run.stop()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .run import TrainRun


class Callback:
    """Base class; override the hooks you need. ``run`` is the ``TrainRun``."""

    essential = False  # True: an exception in a hook ends the run instead of detaching the callback

    def on_train_begin(self, run: TrainRun) -> None:
        """Before the first step (``run.max_steps`` and the device are known)."""

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        """After each optimizer step; ``record`` is the new ``run.history[-1]``."""

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        """After an evaluation; ``record`` holds at least ``step`` and ``eval_loss``."""

    def on_train_end(self, run: TrainRun) -> None:
        """Once, after the run ended for any reason (``run.state`` says which)."""
