"""Training callbacks: how anything (console, live widgets, tests) watches a run.

The training loop displays nothing itself; it calls these hooks. A hook runs on the
training thread, so it must be quick: views throttle themselves (≤ 5 updates/s).
An exception raised by a hook ends the run (state "failed") at a step boundary.
"""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class; override the hooks you need. ``run`` is the ``TrainRun``."""

    def on_train_begin(self, run: Any) -> None:
        """Before the first step (``run.max_steps`` and the device are known)."""

    def on_step_end(self, run: Any, record: dict) -> None:
        """After each optimizer step; ``record`` is the new ``run.history[-1]``."""

    def on_evaluate(self, run: Any, record: dict) -> None:
        """After an evaluation; ``record`` holds at least ``step`` and ``eval_loss``."""

    def on_train_end(self, run: Any) -> None:
        """Once, after the run ended for any reason (``run.state`` says which)."""
