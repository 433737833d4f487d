"""``HistoryView``: ranks of ΔW over a run (module × step heatmap) and σ₁…σᵣ of one module, live or after."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..core import registry
from ..core.analysis.history import MEASURES, rank_map, values_over_steps
from ..core.training.callbacks import Callback
from ..viz.analysis import rank_map_figure, values_over_steps_figure
from .figure_box import FigureBox, with_picture
from .throttle import Throttle


class HistoryView(Callback):
    """Follows ``run.spectra_history``: redraws (at most every ``interval`` s) while the run records, and after."""

    def __init__(self, run: Any, interval: float = 2.0, energy: float = 0.9) -> None:
        self.run, self.energy, self.throttle = run, energy, Throttle(interval)
        self.measure = W.ToggleButtons(options=[("effective rank", "effective"), (f"rank for {energy:.0%} energy",
                                                                                  "energy")], value=MEASURES[0])
        self.module = W.Dropdown(description="module", options=run.spectra_history.modules)
        self.heatmap, self.lines = FigureBox(), FigureBox()
        self.note = W.HTML()
        self.widget = W.VBox([self.measure, self.heatmap, self.module, self.lines, self.note])
        self.measure.observe(lambda _: self.refresh(), "value")
        self.module.observe(lambda _: self.refresh(), "value")
        if not run.done:
            run.add_callback(self)
        self.refresh()

    @classmethod
    def of(cls, model: Any, **kwargs: Any) -> "HistoryView":
        """The view of ``model``'s current or last run."""
        run = registry.require(model).run
        return cls(run, **kwargs)

    def on_step_end(self, run: Any, record: dict) -> None:
        if run.spectra_history.steps and run.spectra_history.steps[-1] == record["step"] and self.throttle.ready():
            self.refresh()

    def on_train_end(self, run: Any) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Redraw both figures from the history recorded so far."""
        history = self.run.spectra_history
        if not len(history):
            self.note.value = "no spectra recorded yet"
            return
        if list(self.module.options) != history.modules:
            self.module.options = history.modules
        self.heatmap.draw(rank_map_figure(rank_map(history, self.measure.value, self.energy)))
        module = self.module.value or history.modules[0]
        self.lines.draw(values_over_steps_figure(history.steps, values_over_steps(history, module), module))
        self.note.value = (f"{len(history.steps)} recorded steps, every {history.every}; recording took "
                           f"{history.seconds:.3f} s of {self.run.seconds:.1f} s")

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus its main figure as plotly JSON for static views (nbconvert, saved notebooks)."""
        return with_picture(self.widget, self.heatmap.figure, **kwargs)
