"""``VsFullLive``: both arms' loss curves overlaid, live while ``vs_full`` trains them, then the table.

It is a ``VsFullCallback`` on every arm: each step goes into a decimating buffer (O(1)); the plot is
refreshed at most every ``interval`` seconds with one restyle of the traces that changed, and once
more when an arm ends. Sweep runs (one per training-set size and arm) move the progress line only.
When the result arrives it shows the measured table and the sweep plot, and replaces the live plot
by static figures so a saved notebook keeps the pictures.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from ..core.analysis.vs_full import VsFullCallback
from ..core.training.reporting import Ema
from ..viz.training import SMOOTHING
from ..viz.vs_full import CURVES, LABELS, curves_figure, result_curves_figure, sweep_figure
from .throttle import Decimator, Throttle


def plotly_bundle(figure: go.Figure, text: str) -> dict:
    """A display bundle that renders ``figure`` statically (also in saved notebooks)."""
    return {"text/plain": text, "application/vnd.plotly.v1+json": json.loads(figure.to_json()),
            **figure._repr_mimebundle_()}


class VsFullLive(VsFullCallback):
    """Live overlaid loss curves of LoRA and full fine-tuning, then the measured table and the sweep plot."""

    def __init__(self, *, max_points: int = 1000, interval: float = 0.2, show_table: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``show_table=False`` when the result is displayed beside the view anyway (``%lora vs-full``)."""
        self.max_points, self.show_table = max_points, show_table
        self.figure = go.FigureWidget(curves_figure())
        self.progress = W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="30%"))
        self.label = W.HTML("waiting for the first arm…")
        self.table = W.HTML()
        self.sweep = W.Box()
        self._plot = W.Box([self.figure])
        self.widget = W.VBox([W.HBox([self.progress, self.label]), self._plot, self.table, self.sweep])
        self.throttle = Throttle(interval, clock)
        self.series = {c: Decimator(max_points) for c in CURVES}
        self._sent = {c: -1 for c in CURVES}
        self._ema = {arm: Ema(SMOOTHING) for arm in LABELS}
        self.arm: str | None = None
        self.size: int | None = None
        self.updates = 0  # plot refreshes sent
        self.result = None
        self._handles: list[Any] = []

    # -- vs_full and training callbacks ---------------------------------------------------------
    def on_arm_begin(self, arm: str, size: int | None) -> None:
        self.arm, self.size = arm, size
        where = f"sweep: {LABELS[arm]} on {size} examples" if size is not None else f"training {LABELS[arm]}"
        self.label.value = html.escape(where + "…")

    def on_train_begin(self, run: Any) -> None:
        self.arm = self.arm or run.adapter
        if self.size is None:  # a new main arm: its curves start afresh
            for curve in CURVES:
                if curve.arm == self.arm:
                    self.series[curve] = Decimator(self.max_points)
            self._ema[self.arm] = Ema(SMOOTHING)
        with self.progress.hold_sync():
            self.progress.max, self.progress.value = run.max_steps, 0

    def on_step_end(self, run: Any, record: dict) -> None:
        if self.size is None:
            step, loss = record["step"], record["loss"]
            self.series[(self.arm, "loss")].add(step, loss)
            self.series[(self.arm, "smoothed")].add(step, self._ema[self.arm].add(loss))
        if self.throttle.ready():
            self._flush(run, record)

    def on_evaluate(self, run: Any, record: dict) -> None:
        if self.size is None:
            self.series[(self.arm, "eval")].add(record["step"], record["eval_loss"])

    def on_train_end(self, run: Any) -> None:
        self._flush(run, run.history[-1] if run.history else None)

    def on_result(self, result: Any) -> None:
        self.result = result
        self.label.value = html.escape(f"done: {result.headline()}")
        self.table.value = result._repr_html_() if self.show_table else ""
        if result.sizes:
            self.sweep.children = (go.FigureWidget(sweep_figure(result)),)
        self._leave_static_pictures(result)

    # -- plotting -----------------------------------------------------------------------------
    def _flush(self, run: Any, record: dict | None) -> None:
        """One restyle of the traces that changed, and the progress line."""
        changed = [i for i, c in enumerate(CURVES) if self.series[c].version != self._sent[c]]
        if changed:
            arrays = [self.series[CURVES[i]].arrays() for i in changed]
            self.figure.plotly_restyle({"x": [a[0] for a in arrays], "y": [a[1] for a in arrays]}, changed)
            for i in changed:
                self._sent[CURVES[i]] = self.series[CURVES[i]].version
            self.updates += 1
        if record is not None:
            with self.progress.hold_sync():
                self.progress.value = min(record["step"], run.max_steps)
            where = f"{LABELS[self.arm]}" + (f" on {self.size} examples" if self.size is not None else "")
            self.label.value = html.escape(f"{where}: step {record['step']}/{run.max_steps} · loss "
                                           f"{record['loss']:.4g}")

    def _leave_static_pictures(self, result: Any) -> None:
        if not self._handles:
            return
        curves = result_curves_figure(result)
        self._handles[0].update(plotly_bundle(curves, "<LoRA vs full fine-tuning: loss curves>"), raw=True)
        if result.sizes:
            self._handles[1].update(plotly_bundle(sweep_figure(result), "<data-size sweep>"), raw=True)
            self.sweep.layout.display = "none"
        self._plot.layout.display = "none"

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, display

        display(self.widget)
        self._handles = [display(HTML(""), display_id=True), display(HTML(""), display_id=True)]
        if self.result is not None:
            self._leave_static_pictures(self.result)
