"""``ShortRunsLive``: the learning-rate sweep (or the placement test) live — a status line and a chart per run.

It is a ``ShortRunCallback`` on every run: the status line follows the current run's steps (at most every
``interval`` seconds) and the chart is redrawn once per finished run (a sweep has a handful), so the traffic
stays small. ``stop()`` (or interrupting the kernel, ■) ends the current run at its next step and the sweep with
it; the runs that finished are kept in the result. At the end the displayed view becomes a static SVG picture
that a saved notebook keeps. ``ui``: ``widget`` (core ipywidgets), ``static`` (one output updated in place) or
``text`` (a printed line per run).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.analysis.shortrun.hooks import ShortRunCallback
from ..frontend import pick
from ..viz.short_runs import LABELS, lr_sweep_spec, placement_names, placement_spec
from .throttle import Throttle
from .ui import Slot, close_tree, svg_bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun

STOP_HINT = "interrupt the kernel (■) or call view.stop() to stop; finished runs are kept"


class ShortRunsLive(ShortRunCallback):
    """Live view of ``lr_sweep`` (``kind="lr"``) or ``placement`` (``kind="placement"``).

    ``ShortRunsLive(ui=...)`` makes the class of that front end (``frontend.pick``): ``WidgetShortRunsLive``,
    ``StaticShortRunsLive`` or ``TextShortRunsLive``; what they share is here."""

    ui = "widget"

    def __new__(cls, *args: Any, ui: str = "widget", **kwargs: Any) -> ShortRunsLive:
        if cls is ShortRunsLive:
            cls = pick(FRONT_ENDS, ui)
        return super().__new__(cls)

    def __init__(self, kind: str = "lr", *, ui: str = "widget", interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.throttle = Throttle(interval, clock)
        self.points: list[Any] = []
        self.result: Any = None
        self.run: TrainRun | None = None
        self.stopping = False
        self.updates = 0  # chart pictures sent
        self.where = ""
        self.line = "waiting for the first run…"
        self.slot = Slot()
        self.closed = False
        self._build()

    # -- what each front end does ----------------------------------------------------------------
    def _build(self) -> None:
        """Make the front end's controls."""

    def _ended_point(self, line: str) -> None:
        """A run of the sweep ended (``line``: how)."""

    def _say(self, line: str) -> None:
        self.line = line

    def _draw(self) -> None:
        """Show the chart now."""

    def _close_front_end(self) -> None:
        """Release the front end's controls."""

    # -- sweep and training callbacks ------------------------------------------------------------
    def on_run_begin(self, arm: str, index: int, total: int, lr: float | None = None,
                     size: int | None = None) -> None:
        self.where = f"run {index + 1}/{total}: {LABELS.get(arm, arm)} at lr {lr:.2g}"
        self._say(f"{self.where}…")

    def on_train_begin(self, run: TrainRun) -> None:
        self.run = run
        if self.stopping:
            run.stop()

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if self.throttle.ready():
            self._say(f"{self.where} · step {record['step']}/{run.max_steps} · loss {record['loss']:.4g}")

    def on_run_end(self, point: Any) -> None:
        self.points.append(point)
        ended = "diverged" if point.state == "failed" else f"final loss {point.final_loss:.4g}"
        self._ended_point(f"{self.where}: {ended} ({point.seconds:.1f} s)")
        self._say(f"{self.where}: {ended}")
        self._draw()

    def on_result(self, result: Any) -> None:
        self.result = result
        self._say(("stopped: " if getattr(result, "stopped", False) else "done: ") + result.headline())
        self._draw()
        self.close()

    def stop(self) -> None:
        """End the current run at its next step boundary; the sweep ends with the runs finished so far."""
        self.stopping = True
        if self.run is not None:
            self.run.stop()

    # -- drawing --------------------------------------------------------------------------------
    def spec(self) -> dict:
        """The chart now: loss against lr (a sweep) or loss curves (placement)."""
        if self.kind == "placement":
            names = placement_names(self.result) if self.result is not None else None
            return placement_spec(self.points, names)
        title = f"lr sweep: {self.result.headline()}" if self.result is not None else None
        measure = self.result.measure if self.result is not None else "final loss"
        return lr_sweep_spec(self.points, title, measure)

    @property
    def figure(self) -> Any:
        from ..viz import figure

        return figure(self.spec())

    def close(self) -> None:
        """Leave a static picture of the chart in the displayed output; close the widgets."""
        if not self.closed:
            self._close_front_end()
        self.closed = True

    def _ipython_display_(self) -> None:
        self.slot.show(svg_bundle(self.spec(), self.line), raw=True)


class WidgetShortRunsLive(ShortRunsLive):
    """The view as core ipywidgets: a status line and the chart."""

    ui = "widget"

    def _build(self) -> None:
        import ipywidgets as W

        from .chart import Chart

        self.label = W.HTML(html.escape(self.line))
        self.chart = Chart(self.spec())
        self.widget = W.VBox([self.label, self.chart])

    def _say(self, line: str) -> None:
        self.line = line
        if not self.closed:
            self.label.value = html.escape(f"{line} · {STOP_HINT}" if self.result is None else line)

    def _draw(self) -> None:
        if not self.closed:
            self.updates += self.chart.draw(self.spec())

    def _close_front_end(self) -> None:
        if self.slot.handle is not None:
            self.slot.show(svg_bundle(self.spec(), self.line), raw=True)
        close_tree(self.widget)

    def _ipython_display_(self) -> None:
        if self.closed:
            super()._ipython_display_()
        else:
            self.slot.show(self.widget)


class StaticShortRunsLive(ShortRunsLive):
    """The view as one output updated in place (an SVG with the status line as text): no widgets."""

    ui = "static"

    def _draw(self) -> None:
        if self.slot.handle is not None:
            self.slot.show(svg_bundle(self.spec(), self.line), raw=True)
            self.updates += 1


class TextShortRunsLive(ShortRunsLive):
    """The view as a printed line per finished run (a terminal, a script); the chart stays in ``.figure``."""

    ui = "text"

    def _ended_point(self, line: str) -> None:
        print(line, flush=True)

    def _ipython_display_(self) -> None:
        """Nothing to display: a line is printed per run."""


FRONT_ENDS = {"widget": WidgetShortRunsLive, "static": StaticShortRunsLive, "text": TextShortRunsLive}
