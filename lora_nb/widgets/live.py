"""``LiveDashboard``: the live training view — curves, progress, Stop and Pause/Resume — as a callback.

Cost per update is O(points), never O(history): records go into decimating buffers (≤ ``max_points``
per trace); the curves are one SVG (about one point per pixel) sent at most every ``chart_interval``
seconds, never faster than ``byte_rate`` bytes per second, and no more often than keeps the CPU time
spent drawing them within ``CHART_SHARE`` of the wall time; the progress line at most every ``interval``
seconds; the final state is always drawn when the run ends. One class per front end, picked
once when the view is made (``frontend.pick``): ``LiveDashboard(ui="widget")`` is a ``WidgetLiveDashboard`` (core
ipywidgets: an ``HTML`` chart, buttons), ``ui="static"`` a ``StaticLiveDashboard`` (one output updated in place by
display id, no widgets: Stop with ``%lora stop`` or the kernel's interrupt), ``ui="text"`` a ``TextLiveDashboard``
(printed lines, as ``ConsoleReporter`` prints them; the curves are still kept for ``.figure``), and ``ui="auto"``
the one this front end shows. When a displayed run ends, its
output becomes a static SVG picture of the whole history (kept by saved notebooks, nbconvert, GitHub)
and the widgets are closed; a failed run keeps its widgets so its error stays readable.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.smoothing import SMOOTHING, Ema
from ..core.training.callbacks import Callback
from ..core.training.reporting import ConsoleReporter, begin_line, end_line, progress_line
from ..frontend import pick
from ..markup import code_spans, error_html
from ..viz.training import SERIES, history_spec, mark_best, memory_title, smoothing_for, training_spec
from .throttle import Decimator, RateLimit, Throttle
from .ui import Slot, close_tree, picture_bundle, svg_bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun


def samples_table(samples: list[dict], last: int = 3) -> str:
    """HTML table of the latest generated samples (``{"step", "prompt", "text"}``)."""
    rows = "".join(f"<tr><td>{s.get('step', '')}</td><td>{html.escape(str(s.get('prompt', '')))}</td>"
                   f"<td>{html.escape(str(s.get('text', '')))}</td></tr>" for s in samples[-last:])
    return f"<table><tr><th>step</th><th>prompt</th><th>sample</th></tr>{rows}</table>"


# Of the wall time that redrawing the curves may take on the training thread. On an idle 2-core CPU the interval and
# byte rate bind first (a ~16 kB picture every ~0.8 s, ~2 ms to draw: 0.25%); the share binds where a picture costs
# more CPU (a slow machine, a long history), and at 1% a 10-ms picture still comes every second: the view stays live.
# (0.25% of wall-clock time left a browser's live plot unchanged for 2 s beside a busy browser.)
CHART_SHARE = 0.01


class LiveDashboard(Callback):
    """Live curves of a run with Stop and Pause/Resume; display it, then train with it as a callback.

    ``LiveDashboard(ui=...)`` makes the class of that front end (``WidgetLiveDashboard``, ``StaticLiveDashboard``
    or ``TextLiveDashboard``; ``auto``: this front end's); what they share is here.
    """

    ui = "widget"
    prints = False  # its lines go to the output as they come: nothing to display

    def __new__(cls, *args: Any, ui: str = "widget", **kwargs: Any) -> LiveDashboard:
        if cls is LiveDashboard:
            cls = pick(FRONT_ENDS, ui)
        return super().__new__(cls)

    def __init__(self, run: TrainRun | None = None, *, max_points: int = 1000, interval: float = 0.25,
                 chart_interval: float = 0.5, byte_rate: float = 20_000, clock: Callable[[], float] = time.monotonic,
                 cost_clock: Callable[[], float] = time.thread_time, title: str | None = None,
                 show_on_begin: bool = False, ui: str = "widget") -> None:
        self.run: TrainRun | None = None
        # what a picture costs is read on the drawing thread's CPU clock: time spent waiting for the GIL (the
        # kernel's other threads) or for a core (a browser beside it) is not the picture's cost
        self.cost_clock = cost_clock
        self.show_on_begin = show_on_begin  # display itself when the run starts (blocking runs in a cell)
        self.title, self.max_points = title, max_points
        self.throttle = Throttle(interval, clock)
        self.chart_limit = RateLimit(chart_interval, byte_rate, clock, share=CHART_SHARE)
        self.updates = 0  # chart refreshes sent
        self.slot = Slot()  # the output this view lives in once displayed
        self.closed = False
        self._units = ("samples/s", memory_title(run))
        self._beta = SMOOTHING
        self._build()
        self._reset()
        if run is not None:
            run.add_callback(self)

    # -- what each front end does ----------------------------------------------------------------
    def _build(self) -> None:
        """Make the front end's controls."""

    def _began(self, run: TrainRun) -> None:
        """The run started: show its first line and enable its controls."""

    def _progress(self, run: TrainRun, record: dict, line: str) -> None:
        """Show the progress line."""

    def _send(self, line: str) -> tuple[bool, int]:
        """Send the curves: ``(sent, bytes)``."""
        raise NotImplementedError

    def _ended(self, run: TrainRun) -> None:
        """The run ended: disable its controls, say how it ended."""

    def _keeps_widgets(self, run: TrainRun) -> bool:
        """Whether the view stays as it is when the run ended (a failed run keeps its error readable)."""
        return False

    def _close_front_end(self) -> None:
        """Release the front end's controls."""

    def _show_live(self) -> None:
        """Display the view of a run in progress."""
        raise NotImplementedError

    # -- training callback ---------------------------------------------------------------------
    def on_train_begin(self, run: TrainRun) -> None:
        self.run = run
        self._beta = smoothing_for(getattr(run, "max_steps", None))
        self._reset()
        for record in list(run.history):  # a dashboard attached to a run in progress catches up once
            self._feed(record)
        for record in list(run.evals):
            self.series["eval_loss"].add(record["step"], record["eval_loss"])
        self._units = (self._units[0], memory_title(run))
        self._began(run)
        if self.show_on_begin and self.slot.handle is None:
            self._ipython_display_()
        if run.history:
            self._flush(run, final=False)

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        self._feed(record)
        if self.throttle.ready():
            self._flush(run, final=False)

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        self.series["eval_loss"].add(record["step"], record["eval_loss"])

    def on_train_end(self, run: TrainRun) -> None:
        self._flush(run, final=True)
        self._ended(run)
        self._leave_static_picture(run)

    # -- curves --------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.series = {s.key: Decimator(self.max_points) for s in SERIES}
        self._ema = Ema(self._beta)
        self._last: dict | None = None
        self._smoothed = float("nan")

    def _feed(self, record: dict) -> None:
        step, series = record["step"], self.series
        series["loss"].add(step, record["loss"])
        self._smoothed = self._ema.add(record["loss"])
        series["loss_smoothed"].add(step, self._smoothed)
        series["lr"].add(step, record.get("lr"))
        series["grad_norm"].add(step, record.get("grad_norm"))
        series["throughput"].add(step, record.get("tokens_per_s", record.get("samples_per_s")))
        series["memory_mb"].add(step, record.get("memory_mb"))
        if self._last is None:  # the throughput unit is known from the first record
            self._units = ("tokens/s" if "tokens_per_s" in record else "samples/s", self._units[1])
        self._last = record

    def spec(self) -> dict:
        """The live curves as a spec (decimated buffers; the best eval marked when the run reports one)."""
        values = {s.key: self.series[s.key].arrays() for s in SERIES}
        spec = training_spec(self.title, self._units[0], self._units[1], values)
        return mark_best(spec, getattr(self.run, "best", None))

    @property
    def figure(self) -> Any:
        """The live curves as a plotly ``go.Figure``."""
        from ..viz import figure

        return figure(self.spec())

    def _flush(self, run: TrainRun, final: bool) -> None:
        """Send what changed: the progress line, and the curves when their rate limit allows (always at the end)."""
        record = self._last
        line = ""
        if record is not None:
            line = progress_line(run, record, self._smoothed) + (" · paused" if run.state == "paused" else "")
            self._progress(run, record, line)
        if not (final or self.chart_limit.ready()):
            return
        started = self.cost_clock()
        sent, n_bytes = self._send(line)
        if sent:
            self.updates += 1
            self.chart_limit.sent(n_bytes, self.cost_clock() - started)

    def static_spec(self) -> dict:
        """The run's whole history as a spec (what a saved notebook keeps)."""
        run = self.run
        return history_spec(run.history, run.evals, title=self.title or f"{run.state}: {run.summary_line()}",
                            best=getattr(run, "best", None), memory=memory_title(run))

    def static_figure(self) -> Any:
        """The run's whole history as a plotly ``go.Figure``."""
        from ..viz import figure

        return figure(self.static_spec())

    def _picture(self) -> dict:
        return picture_bundle([self.static_spec()], f"<training curves: {self.run.summary_line()}>")

    def _leave_static_picture(self, run: TrainRun) -> None:
        """Replace the displayed view by the picture of the whole run; close the widgets (unless it failed)."""
        if self.slot.handle is None or self._keeps_widgets(run):
            return
        self.slot.show(self._picture(), raw=True)
        self.close()

    def close(self) -> None:
        """Close the widgets and drop the buffers (the view stops following its run)."""
        if not self.closed:
            self._close_front_end()
        self.closed = True
        self.series = {}

    def _ipython_display_(self) -> None:
        if self.run is not None and self.run.done:
            self.slot.show(self._picture(), raw=True)
        else:
            self._show_live()


class WidgetLiveDashboard(LiveDashboard):
    """The live view as core ipywidgets: progress bar, Pause/Resume and Stop buttons, the curves as an SVG."""

    ui = "widget"

    def _build(self) -> None:
        import ipywidgets as widgets

        from .chart import Chart

        self.chart = Chart()
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="30%"))
        self.label = widgets.HTML("waiting for the run to start…")
        self.pause_button = widgets.Button(description="Pause", icon="pause", disabled=True)
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
        self.error = widgets.HTML()
        self.samples = widgets.HTML()
        self.panels = widgets.VBox()  # extra panels callers add under the curves (``add_panel``)
        self.widget = widgets.VBox([
            widgets.HBox([self.progress, self.pause_button, self.stop_button, self.label]), self.error, self.chart,
            self.samples, self.panels,
        ])
        self.stop_button.on_click(self._on_stop)
        self.pause_button.on_click(self._on_pause)

    def add_panel(self, widget: Any) -> None:
        """Show ``widget`` under the curves (e.g. a spectra-history plot that follows the run)."""
        self.panels.children = (*self.panels.children, widget)

    def _began(self, run: TrainRun) -> None:
        self.progress.max = run.max_steps
        self.label.value = code_spans(begin_line(run))
        live = run.background and not run.done
        self.pause_button.disabled = self.stop_button.disabled = not live
        if not run.background:
            self.stop_button.tooltip = "a blocking run stops with the kernel's interrupt (■)"

    def _progress(self, run: TrainRun, record: dict, line: str) -> None:
        with self.progress.hold_sync():
            self.progress.value = min(record["step"], run.max_steps)
        self.label.value = code_spans(line)
        samples = getattr(run, "samples", None)
        if samples:
            self.samples.value = samples_table(samples)

    def _send(self, line: str) -> tuple[bool, int]:
        sent = self.chart.draw(self.spec())
        return sent, len(self.chart.value)

    def _ended(self, run: TrainRun) -> None:
        self.pause_button.disabled = self.stop_button.disabled = True
        self.label.value = code_spans(end_line(run))
        if run.state == "failed":
            self.error.value = (
                error_html(run.message, "div", lead="training failed:")
                + (f"<details><summary>traceback</summary><pre>{html.escape(run.traceback)}</pre></details>"
                   if run.traceback else ""))

    def _keeps_widgets(self, run: TrainRun) -> bool:
        return run.state == "failed"

    def _close_front_end(self) -> None:
        close_tree(self.widget)

    def _show_live(self) -> None:
        from .compat import widget_bundle

        self.slot.show(widget_bundle(self.widget), raw=True)  # by display id under ipywidgets 7 too

    # -- buttons -------------------------------------------------------------------------------
    def _on_stop(self, _button: Any = None) -> None:
        if self.run is not None:
            self.run.stop()
            self.stop_button.disabled = self.pause_button.disabled = True
            self.label.value = "stopping at the end of this step…"

    def _on_pause(self, _button: Any = None) -> None:
        run = self.run
        if run is None:
            return
        if run.state == "paused":
            run.resume()
            self.pause_button.description, self.pause_button.icon = "Pause", "pause"
        else:
            run.pause()
            self.pause_button.description, self.pause_button.icon = "Resume", "play"
            self.label.value = f"paused at step {run.step}/{run.max_steps}; press Resume to go on"


class StaticLiveDashboard(LiveDashboard):
    """The live view as one output updated in place (an SVG with its progress line as text): no widgets."""

    ui = "static"

    def _send(self, line: str) -> tuple[bool, int]:
        sent, bundle = self.slot.handle is not None, svg_bundle(self.spec(), line or "<training curves>")
        if sent:
            self.slot.show(bundle, raw=True)
        return sent, len(bundle["image/svg+xml"])

    def _show_live(self) -> None:
        self.slot.show(svg_bundle(self.spec(), "<training curves>"), raw=True)


class TextLiveDashboard(LiveDashboard):
    """The live view as printed lines (a terminal, a script), as ``ConsoleReporter`` prints them: the first lines,
    progress every 2 s (none for a background run, which would write over the prompt), evaluations and the end."""

    ui = "text"
    prints = True

    def _build(self) -> None:
        self.reporter = ConsoleReporter()
        self.begun = self.reporter.begun  # set once the first lines are printed (a background caller may wait)

    def on_train_begin(self, run: TrainRun) -> None:
        self.reporter.progress = not run.background
        self.reporter.on_train_begin(run)
        super().on_train_begin(run)

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        self.reporter.on_step_end(run, record)
        super().on_step_end(run, record)

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        self.reporter.on_evaluate(run, record)
        super().on_evaluate(run, record)

    def on_train_end(self, run: TrainRun) -> None:
        super().on_train_end(run)
        self.reporter.on_train_end(run)

    def _send(self, line: str) -> tuple[bool, int]:
        return False, 0  # no picture: the lines are printed

    def _show_live(self) -> None:
        """Nothing to display: the lines are printed as the run goes."""


FRONT_ENDS = {"widget": WidgetLiveDashboard, "static": StaticLiveDashboard, "text": TextLiveDashboard}
