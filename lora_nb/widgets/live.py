"""``LiveDashboard``: the live training view — curves, progress, Stop and Pause/Resume — as a callback.

Cost per update is O(points), never O(history): records go into decimating buffers (≤ ``max_points``
per trace); the plot is refreshed at most every ``interval`` seconds (4/s by default; with the final
flush, ≤ 5/s on any run longer than a second) by one restyle of the traces that changed (arrays
sent as binary buffers); the final state is always flushed when the run ends. A saved notebook keeps
a static figure of the final curves: the dashboard reserves an output when displayed and fills it
at the end (a FigureWidget's saved state holds only the data it had when it was displayed).
"""

from __future__ import annotations

import contextvars
import html
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from ..core.training.callbacks import Callback
from ..core.training.reporting import Ema, begin_line, progress_line
from ..viz.training import SERIES, SMOOTHING, history_figure, training_figure
from .throttle import Decimator, Throttle


class LiveDashboard(Callback):
    """Live plots of a run with Stop and Pause/Resume; display it, then train with it as a callback."""

    def __init__(self, run: Any = None, *, max_points: int = 1000, interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, title: str | None = None,
                 show_on_begin: bool = False) -> None:
        self.run = None
        self.show_on_begin = show_on_begin  # display itself when the run starts (blocking runs in a cell)
        self.title, self.max_points = title, max_points
        self.figure = go.FigureWidget(training_figure(title))
        self.progress = widgets.IntProgress(min=0, max=1, value=0, layout=widgets.Layout(width="30%"))
        self.label = widgets.HTML("waiting for the run to start…")
        self.pause_button = widgets.Button(description="Pause", icon="pause", disabled=True)
        self.stop_button = widgets.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
        self.error = widgets.HTML()
        self._plot = widgets.Box([self.figure])
        self.widget = widgets.VBox([
            widgets.HBox([self.progress, self.pause_button, self.stop_button, self.label]), self.error, self._plot,
        ])
        self.stop_button.on_click(self._on_stop)
        self.pause_button.on_click(self._on_pause)
        self.throttle = Throttle(interval, clock)
        self.updates = 0  # plot refreshes sent
        self._handle = None  # display handle of the static picture left when the run ends
        self._reset()
        if run is not None:
            run.add_callback(self)

    # -- training callback ---------------------------------------------------------------------
    def on_train_begin(self, run: Any) -> None:
        self.run = run
        if self.show_on_begin and self._handle is None:
            self._ipython_display_()
        self._reset()
        for record in list(run.history):  # a dashboard attached to a run in progress catches up once
            self._feed(record)
        for record in list(run.evals):
            self.series["eval_loss"].add(record["step"], record["eval_loss"])
        self.figure.layout.annotations[4].text = (
            "GPU memory allocated (MB)" if run.device.type == "cuda" else "process RSS (MB)")
        self.progress.max = run.max_steps
        self.label.value = html.escape(begin_line(run))
        live = run.background and not run.done
        self.pause_button.disabled = self.stop_button.disabled = not live
        if not run.background:
            self.stop_button.tooltip = "a blocking run stops with the kernel's interrupt (■)"
        if run.history:
            self._flush(run)

    def on_step_end(self, run: Any, record: dict) -> None:
        self._feed(record)
        if self.throttle.ready():
            self._flush(run)

    def on_evaluate(self, run: Any, record: dict) -> None:
        self.series["eval_loss"].add(record["step"], record["eval_loss"])

    def on_train_end(self, run: Any) -> None:
        self._flush(run)
        self.pause_button.disabled = self.stop_button.disabled = True
        self.label.value = html.escape(f"{run.state}: {run.message}")
        if run.state == "failed":
            self.error.value = (
                f"<div style='color:#b00020'><b>training failed:</b> {html.escape(run.message)}</div>"
                + (f"<details><summary>traceback</summary><pre>{html.escape(run.traceback)}</pre></details>"
                   if run.traceback else ""))
        self._leave_static_picture(run)

    # -- plotting ------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.series = {s.key: Decimator(self.max_points) for s in SERIES}
        self._sent = [-1] * len(SERIES)
        self._ema = Ema(SMOOTHING)
        self._last: dict | None = None
        self._titled = False
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
        self._last = record

    def _flush(self, run: Any) -> None:
        """Send what changed since the last refresh: one plot update, one progress update."""
        changed = [i for i, s in enumerate(SERIES) if self.series[s.key].version != self._sent[i]]
        if changed:
            if self._last is not None and not self._titled:  # the throughput unit is known from the first record
                self.figure.layout.annotations[3].text = "tokens/s" if "tokens_per_s" in self._last else "samples/s"
                self._titled = True
            arrays = [self.series[SERIES[i].key].arrays() for i in changed]
            self.figure.plotly_restyle({"x": [a[0] for a in arrays], "y": [a[1] for a in arrays]}, changed)
            for i in changed:
                self._sent[i] = self.series[SERIES[i].key].version
            self.updates += 1
        record = self._last
        if record is not None:
            with self.progress.hold_sync():
                self.progress.value = min(record["step"], run.max_steps)
            state = " · paused" if run.state == "paused" else ""
            self.label.value = html.escape(progress_line(run, record, self._smoothed) + state)

    def static_figure(self) -> go.Figure:
        """The run's whole history as a plain figure (what a saved notebook keeps)."""
        run = self.run
        return history_figure(run.history, run.evals, title=self.title or f"{run.state}: {run.summary_line()}")

    def _leave_static_picture(self, run: Any) -> None:
        if self._handle is None:
            return
        figure = self.static_figure()
        # a plotly figure's own display ignores display ids: send its mime bundle as the update instead
        bundle = {"text/plain": f"<training curves: {self.run.summary_line()}>",
                  "application/vnd.plotly.v1+json": json.loads(figure.to_json()), **figure._repr_mimebundle_()}
        self._handle.update(bundle, raw=True)  # in JupyterLab: the output of the cell that started the run
        if threading.current_thread() is not threading.main_thread():  # headless runners follow the latest cell
            contextvars.Context().run(self._handle.update, bundle, raw=True)
        self._plot.layout.display = "none"

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

    # -- display -------------------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        self._handle = display(HTML(""), display_id=True)
        if self.run is not None and self.run.done:
            self._leave_static_picture(self.run)
