"""ΔW's singular values over a run: ``run.spectra_history``, recorded every N steps at ≤ 0.5% of the step time.

Every single-process run records them (``SpectraRecorder`` is the run's first callback), at step 1
and then whenever the time spent recording stays within ``budget`` of the training time so far
(one recording kept in reserve for the last step, which is always recorded): so N adapts to
recording cost / (budget × step time) whatever the model's size. ``TrainSettings.spectra_every``
fixes N instead (0: off).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ... import lowrank, registry
from ..callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from ..run import TrainRun

BUDGET = 0.005  # share of the mean step time that recording may cost (a quarter of the ≤ 2% a run may add)


@dataclass
class SpectraHistory:
    """ΔW's singular values per module at recorded steps: ``values[module][i]`` belongs to ``steps[i]``."""

    steps: list[int] = field(default_factory=list)
    values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent recording
    every: int = 1  # the current spacing N (steps)
    adapter: str = ""

    @property
    def modules(self) -> list[str]:
        return list(self.values)

    def __len__(self) -> int:
        return len(self.steps)

    def snapshot(self) -> "SpectraHistory":
        """A consistent copy of the steps recorded so far and their values (safe while a run records)."""
        n = len(self.steps)  # a recording appends every module's values first, then its step
        values = {name: list(v[:n]) for name, v in list(self.values.items())}
        return SpectraHistory(list(self.steps[:n]), values, self.seconds, self.every, self.adapter)

    def __repr__(self) -> str:
        return (f"SpectraHistory({len(self.values)} modules × {len(self.steps)} recorded steps, every {self.every} "
                f"steps, {self.seconds:.3f} s spent recording)")


class SpectraRecorder(Callback):
    """Fills ``run.spectra_history`` during a run; costs ≤ ``budget`` of the step time unless ``every`` is fixed."""

    def __init__(self, every: int | None = None, budget: float = BUDGET,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.fixed, self.budget, self.clock = every, budget, clock
        self.layers: list = []
        self.last = 0
        self.cost = 0.0  # seconds of the latest recording
        self.step_seconds = 0.0  # training time so far (sum of the steps' wall times)

    def on_train_begin(self, run: TrainRun) -> None:
        session = registry.find(run.model)
        history = run.spectra_history
        history.adapter, history.every = run.adapter, self.fixed or 1
        if self.fixed == 0 or session is None or not hasattr(session, "peft"):
            return
        self.lock = session.lock
        self.layers = [(n, m) for n, m in session.model.named_modules()
                       if lowrank.layer_pair(m, run.adapter, n) is not None]

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if not self.layers:
            return
        self.step_seconds += record["seconds"]
        if self.fixed:
            due = record["step"] - self.last >= self.fixed
        else:  # within budget, keeping one recording in reserve for the last step
            due = self.last == 0 or run.spectra_history.seconds + 2 * self.cost <= self.budget * self.step_seconds
        if due:
            self.record(run, record["step"])

    def on_train_end(self, run: TrainRun) -> None:
        if self.layers and run.step > self.last:
            self.record(run, run.step)

    def record(self, run: TrainRun, step: int) -> None:
        """Add the spectra at ``step``; estimate the spacing the budget allows from what this recording cost."""
        history, t0 = run.spectra_history, self.clock()
        with self.lock, lowrank.one_thread():
            pairs = [lowrank.layer_pair(m, run.adapter, n) for n, m in self.layers]
            values = lowrank.svdvals_many(pairs)
        for (name, _), v in zip(self.layers, values):
            history.values.setdefault(name, []).append(v.numpy())
        history.steps.append(step)
        self.last = step
        self.cost = self.clock() - t0
        history.seconds += self.cost
        if self.fixed is None and run.history:
            mean_step = self.step_seconds / len(run.history)
            history.every = max(1, math.ceil(self.cost / (self.budget * mean_step)))
