"""``HistoryView``: ranks of ΔW over a run (module × step heatmap) and σ₁…σᵣ of one module, live or after.

Both charts are SVG (``Chart``); the heatmap is one embedded PNG, so a redraw costs kilobytes. While the
run trains, the view is one of its callbacks: it redraws only when a new spectra record arrived, at most
every ``interval`` seconds, never faster than keeps what it sends under ``byte_rate`` bytes per second
(many σ lines of a large rank cost more), and with its own drawing under 5% of the wall time; when the run
ends it draws the whole history. ``follow(run)`` moves it to another run (the dashboard's History tab
follows each new run); ``close()`` releases its widgets and stops following the run. Displayed, it also
carries its current charts as HTML for tools without widgets.
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..core import registry
from ..core.analysis.learned.history import MEASURES, rank_map, values_over_steps
from ..core.training.callbacks import Callback
from ..errors import TrainingError
from ..viz.analysis import rank_map_spec, values_over_steps_spec
from .chart import Chart, ViewBox
from .throttle import RateLimit
from .ui import close_tree, set_options

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun
    from ..core.types import RunHandle

SHARE = 0.05  # of the wall time that live redraws may take on the training thread (as the explorers)


class HistoryView(Callback):
    """Shows ``run.spectra_history``: live while the run records (throttled), whole once it ended.

    Give it a run, or pass it to ``train(callbacks=[view])`` and it shows that run from its first step.
    """

    def __init__(self, run: RunHandle | None = None, interval: float = 2.0, energy: float = 0.9,
                 byte_rate: float = 10_000, clock: Callable[[], float] | None = None,
                 share: float | None = SHARE) -> None:
        self.run: RunHandle | None = None
        self.energy = energy
        self.clock = clock or time.monotonic
        self.limit = RateLimit(interval, byte_rate, self.clock, share=share)
        self.lock = threading.RLock()  # the training thread and the front end both redraw
        self.closed = False
        self.drawn = 0  # spectra records of ``run`` on screen
        self.redraws = 0  # times the charts were recomputed
        self.measure = W.ToggleButtons(options=[("effective rank", "effective"),
                                                (f"rank for {energy:.0%} energy", "energy")], value=MEASURES[0],
                                       style={"button_width": "auto"})
        self.module = W.Dropdown(description="module", options=[], layout=W.Layout(width="520px"))
        self.heatmap, self.lines = Chart(), Chart()
        self.note = W.HTML()
        self.widget = ViewBox([self.measure, self.note, self.heatmap, self.module, self.lines],
                              fallback=self.picture_html)
        self._drawer: int | None = None  # the thread redrawing now (its own option changes redraw nothing)
        self.measure.observe(self._picked, "value")
        self.module.observe(self._picked, "value")
        if run is not None:
            self.follow(run)

    @classmethod
    def of(cls, model: Any, **kwargs: Any) -> HistoryView:
        """The view of ``model``'s current or last run."""
        run = registry.require(model).run
        if run is None:
            raise TrainingError("this model has not been trained yet: no run to show the spectra history of "
                                "(`%lora train`)")
        return cls(run, **kwargs)

    def follow(self, run: RunHandle) -> None:
        """Show ``run`` from now on (live while it trains); the previous run is left alone."""
        with self.lock:
            if self.closed or run is self.run:
                return
            self._detach()
            self.run, self.drawn = run, 0
        if not run.done:
            run.add_callback(self)  # a run that already ended meanwhile calls on_train_end now
        self.refresh()

    def on_train_begin(self, run: TrainRun) -> None:
        with self.lock:  # a view given to ``train(callbacks=[view])`` before its run existed
            if self.run is None and not self.closed:
                self.run, self.drawn = run, 0

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if run is self.run and len(run.spectra_history) > self.drawn and self.limit.ready():
            self.refresh()

    def on_train_end(self, run: TrainRun) -> None:
        if run is self.run and (not self.drawn or len(run.spectra_history) > self.drawn):
            self.refresh()  # the records the interval held back (or why there are none)

    def _picked(self, _change: Any = None) -> None:
        if self._drawer != threading.get_ident():
            self.refresh()

    def refresh(self) -> None:
        """Redraw both charts from the history recorded so far."""
        with self.lock:
            if self.closed or self.run is None:
                return
            self._drawer = threading.get_ident()
            try:
                self._draw(self.run.spectra_history.snapshot())
            finally:
                self._drawer = None

    def _draw(self, history: Any) -> None:
        if not len(history):
            self.heatmap.clear()
            self.lines.clear()
            self.note.value = ("this run recorded no spectra (spectra_every=0 or several processes)"
                               if self.run.state not in ("running", "paused") else "no spectra recorded yet")
            self.drawn = 0
            return
        set_options(self.module, history.modules)
        module = self.module.value
        sent, start = self.sent_bytes, self.clock()
        self.heatmap.draw(rank_map_spec(rank_map(history, self.measure.value, self.energy)))
        self.lines.draw(values_over_steps_spec(history.steps, values_over_steps(history, module), module,
                                               history.modules))
        self.limit.sent(self.sent_bytes - sent, self.clock() - start)
        self.drawn = len(history)
        self.redraws += 1
        self.note.value = html.escape(f"{len(history.steps)} recorded steps, every {history.every}; recording took "
                                      f"{history.seconds:.3f} s of {self.run.seconds:.1f} s")

    @property
    def sent_bytes(self) -> int:
        """SVG bytes both charts sent so far."""
        return self.heatmap.sent_bytes + self.lines.sent_bytes

    def picture_html(self) -> str:
        """The charts as they are now (what tools without widgets show)."""
        return (self.heatmap.value + self.lines.value) or self.note.value

    def _detach(self) -> None:
        if self.run is not None:
            with contextlib.suppress(ValueError):  # the loop iterates over a copy; list.remove is atomic
                self.run.callbacks.remove(self)

    def close(self) -> None:
        """Close the widgets and stop following the run."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._detach()
        close_tree(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """The widget, plus its charts as HTML and the heatmap as SVG for tools without a widget manager."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if self.heatmap.value:
            bundle["image/svg+xml"] = self.heatmap.value
        return bundle

    def __repr__(self) -> str:
        run = self.run
        what = f"run of adapter `{run.adapter}`, {len(run.spectra_history)} recorded steps" if run else "no run"
        return f"<HistoryView: {what}>"
