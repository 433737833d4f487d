"""``VsFullLive``: both arms' loss curves overlaid, live while ``vs_full`` trains them, then the table and charts.

It is a ``ShortRunCallback`` on every arm: each step goes into a decimating buffer (O(1)); the curves are
redrawn (one SVG) at most every ``interval`` seconds and never faster than ``byte_rate`` bytes per
second, and once more when an arm ends. Sweep runs (one per training-set size and arm) move the
progress line only. One class per front end, picked once: ``VsFullLive(ui="widget")`` is a
``WidgetVsFullLive`` (core ipywidgets), ``ui="static"`` a ``StaticVsFullLive`` (one output updated in place).
When the result arrives the view adds the directions chart (which subspaces LoRA's and full fine-tuning's
updates share, per layer) and the sweep; the displayed view becomes static SVG pictures (curves, sweep,
directions) that a saved notebook keeps, and its widgets are closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.analysis.shortrun.hooks import ShortRunCallback
from ..core.smoothing import SMOOTHING, Ema
from ..frontend import pick
from ..markup import code_spans
from ..viz.analysis import directions_spec
from ..viz.vs_full import CURVES, LABELS, curves_spec, result_curves_spec, sweep_spec
from .throttle import Decimator, RateLimit
from .ui import Slot, close_tree, picture_bundle, svg_bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun


class VsFullLive(ShortRunCallback):
    """Live overlaid loss curves of LoRA and full fine-tuning, then the measured table and the sweep plot.

    ``VsFullLive(ui=...)`` makes the class of that front end; what they share is here.
    """

    ui = "widget"

    def __new__(cls, *args: Any, ui: str = "widget", **kwargs: Any) -> VsFullLive:
        if cls is VsFullLive:
            cls = pick({"widget": WidgetVsFullLive, "static": StaticVsFullLive}, ui,
                       needs="the vs-full view draws curves: ui widget or static (text: `ArmLines` prints each arm)")
        return super().__new__(cls)

    def __init__(self, *, max_points: int = 1000, interval: float = 0.5, byte_rate: float = 20_000,
                 show_table: bool = True, clock: Callable[[], float] = time.monotonic, ui: str = "widget") -> None:
        """``show_table=False`` when the result is displayed beside the view anyway (``%lora vs-full``)."""
        self.max_points, self.show_table = max_points, show_table
        self.limit = RateLimit(interval, byte_rate, clock)
        self.series = {c: Decimator(max_points) for c in CURVES}
        self._ema = {arm: Ema(SMOOTHING) for arm in LABELS}
        self.arm: str | None = None
        self.size: int | None = None
        self.updates = 0  # curve pictures sent
        self.result = None
        self.closed = False
        self.slots = (Slot(), Slot(), Slot(), Slot())  # the live view, then the curves; sweep; directions; table
        self.line = "waiting for the first arm…"
        self._build()

    # -- what each front end does ----------------------------------------------------------------
    def _build(self) -> None:
        """Make the front end's controls."""

    def _progress(self, value: int, maximum: int | None = None) -> None:
        """Move the progress bar."""

    def _show_line(self, line: str) -> None:
        """Show the progress line."""

    def _show_result(self, result: Any) -> None:
        """Show the table, the sweep and the directions."""

    def _send(self) -> tuple[bool, int]:
        """Send the curves: ``(sent, bytes)``."""
        raise NotImplementedError

    def _close_front_end(self) -> None:
        """Release the front end's controls."""

    def _first_output(self) -> tuple[Any, bool]:
        """What the view's first output shows while it runs, and whether it is a raw bundle."""
        raise NotImplementedError

    # -- vs_full and training callbacks ---------------------------------------------------------
    def on_run_begin(self, arm: str, index: int, total: int, lr: float | None = None,
                     size: int | None = None) -> None:
        self.arm, self.size = arm, size
        where = f"sweep: {LABELS[arm]} on {size} examples" if size is not None else f"training {LABELS[arm]}"
        self._say(where + "…")

    def on_train_begin(self, run: TrainRun) -> None:
        self.arm = self.arm or run.adapter
        if self.size is None:  # a new main arm: its curves start afresh
            for curve in CURVES:
                if curve.arm == self.arm:
                    self.series[curve] = Decimator(self.max_points)
            self._ema[self.arm] = Ema(SMOOTHING)
        self._progress(0, run.max_steps)

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if self.size is None:
            step, loss = record["step"], record["loss"]
            self.series[(self.arm, "loss")].add(step, loss)
            self.series[(self.arm, "smoothed")].add(step, self._ema[self.arm].add(loss))
        if self.limit.ready():
            self._flush(run, record)

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        if self.size is None:
            self.series[(self.arm, "eval")].add(record["step"], record["eval_loss"])

    def on_train_end(self, run: TrainRun) -> None:
        self._flush(run, run.history[-1] if run.history else None)

    def on_result(self, result: Any) -> None:
        self.result = result
        self._say(f"done: {result.headline()}")
        self._show_result(result)
        self._leave_static_pictures(result)

    # -- drawing --------------------------------------------------------------------------------
    def spec(self) -> dict:
        """The live curves as a spec (decimated buffers)."""
        return curves_spec(values={c: self.series[c].arrays() for c in CURVES})

    @property
    def figure(self) -> Any:
        """The live curves as a plotly ``go.Figure``."""
        from ..viz import figure

        return figure(self.spec())

    def _say(self, line: str) -> None:
        self.line = line
        self._show_line(line)

    def _flush(self, run: TrainRun, record: dict | None) -> None:
        """One new picture of the curves, and the progress line."""
        if record is not None:
            self._progress(min(record["step"], run.max_steps))
            where = f"{LABELS[self.arm]}" + (f" on {self.size} examples" if self.size is not None else "")
            self._say(f"{where}: step {record['step']}/{run.max_steps} · loss {record['loss']:.4g}")
        if self.size is not None:
            return
        sent, n_bytes = self._send()
        if sent:
            self.updates += 1
            self.limit.sent(n_bytes)

    def _leave_static_pictures(self, result: Any) -> None:
        """The displayed view becomes the pictures of the result (and its table when asked); widgets close."""
        if self.slots[0].handle is None:
            return
        self.slots[0].show(picture_bundle([result_curves_spec(result)], "<LoRA vs full fine-tuning: loss curves>"),
                           raw=True)
        if result.sizes:
            self.slots[1].show(picture_bundle([sweep_spec(result)], "<data-size sweep>"), raw=True)
        if result.directions:
            self.slots[2].show(picture_bundle([directions_spec(result.directions)], "<directions of LoRA vs full FT>"),
                               raw=True)
        if self.show_table:
            self.slots[3].show({"text/html": result._repr_html_(), "text/plain": result.headline()}, raw=True)
        self.close()

    def close(self) -> None:
        """Close the widgets (the pictures stay in the notebook)."""
        if not self.closed:
            self._close_front_end()
        self.closed = True

    def _ipython_display_(self) -> None:
        from IPython.display import HTML

        first, raw = self._first_output()
        self.slots[0].show(first, raw=raw)
        for slot in self.slots[1:]:
            slot.show(HTML(""))
        if self.result is not None:
            self._leave_static_pictures(self.result)


class WidgetVsFullLive(VsFullLive):
    """The comparison as core ipywidgets: progress bar and line, the curves, then table, sweep and directions."""

    ui = "widget"

    def _build(self) -> None:
        import ipywidgets as W

        from .chart import Chart

        self.chart = Chart(curves_spec())
        self.progress = W.IntProgress(min=0, max=1, value=0, layout=W.Layout(width="30%"))
        self.label = W.HTML(self.line)
        self.table = W.HTML()
        self.sweep_chart = Chart()
        self.directions_chart = Chart()
        self.widget = W.VBox([W.HBox([self.progress, self.label]), self.chart, self.table, self.sweep_chart,
                              self.directions_chart])

    def _progress(self, value: int, maximum: int | None = None) -> None:
        with self.progress.hold_sync():
            if maximum is not None:
                self.progress.max = maximum
            self.progress.value = value

    def _show_line(self, line: str) -> None:
        self.label.value = code_spans(line)

    def _show_result(self, result: Any) -> None:
        self.table.value = result._repr_html_() if self.show_table else ""
        if result.sizes:
            self.sweep_chart.draw(sweep_spec(result))
        if result.directions:
            self.directions_chart.draw(directions_spec(result.directions))

    def _send(self) -> tuple[bool, int]:
        return self.chart.draw(self.spec()), len(self.chart.value)

    def _close_front_end(self) -> None:
        close_tree(self.widget)

    def _first_output(self) -> tuple[Any, bool]:
        from .compat import widget_bundle

        return widget_bundle(self.widget), True  # shown by display id under ipywidgets 7 too


class StaticVsFullLive(VsFullLive):
    """The comparison as one output updated in place (an SVG with its progress line as text): no widgets."""

    ui = "static"

    def _send(self) -> tuple[bool, int]:
        bundle = svg_bundle(self.spec(), self.line)
        sent = self.slots[0].handle is not None
        if sent:
            self.slots[0].show(bundle, raw=True)
        return sent, len(bundle["image/svg+xml"])

    def _first_output(self) -> tuple[Any, bool]:
        return svg_bundle(self.spec(), self.line), True
