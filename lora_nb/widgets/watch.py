"""The view of a watched trainer: lora_nb's live dashboard plus the panels of what the trainer family logs.

``lora_nb.watch(trainer)`` returns a ``TrainerWatch``; ``lora_nb.fit(trainer)`` also starts ``trainer.train()`` in a
background thread (so Stop and Pause can be pressed) and ``lora_nb.callback()`` is the bare ``TrainerCallback`` for
``callbacks=[…]``. ``MetricPanels`` draws every key the trainer logs beyond lora_nb's own (DPO's rewards, margin and
accuracy; GRPO's reward mean and std per reward function, share of groups whose rewards are all equal, completion
length, entropy, KL; any unknown key in a panel of its own), at most once per ``interval`` and only while displayed:
a hidden view draws nothing. When the run ends the panels become a static picture.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from ..core.training.callbacks import Callback
from ..core.training.capacity import Capacity
from ..core.watch.logs import extra_keys, panel_of, panel_order
from ..frontend import COLAB_NOTE, in_colab, pick, resolve_ui, say_once
from .live import LiveDashboard
from .throttle import Decimator, Throttle
from .ui import Slot, close_tree, picture_bundle

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun
    from ..core.watch.callback import WatchCallback, WatchedRun


def panel_spec(title: str, series: dict[str, tuple]) -> dict:
    """One panel: a line per logged key against the step."""
    data = [{"type": "scatter", "x": list(xs), "y": list(ys), "name": key, "mode": "lines+markers"}
            for key, (xs, ys) in series.items()]
    return {"data": data, "layout": {"height": 240, "title": {"text": title}, "showlegend": len(data) > 1,
                                     "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
                                     "xaxis": {"title": {"text": "step"}},
                                     "meta": {"alt": f"{title} against the optimizer step"}}}


class MetricPanels(Callback):
    """The trainer family's own curves (every logged key lora_nb's dashboard does not draw), one panel per group.

    ``MetricPanels(ui=...)`` makes the class of that front end (``frontend.pick``): ``WidgetMetricPanels``,
    ``StaticMetricPanels`` or ``TextMetricPanels``; what they share is here."""

    ui = "widget"
    widget: Any = None  # the front end's widgets, while the run has not ended

    def __new__(cls, *args: Any, ui: str = "widget", **kwargs: Any) -> MetricPanels:
        if cls is MetricPanels:
            cls = pick(FRONT_ENDS, ui)
        return super().__new__(cls)

    def __init__(self, *, ui: str = "widget", max_points: int = 1000, interval: float = 1.0) -> None:
        self.max_points = max_points
        self.throttle = Throttle(interval)
        self.series: dict[str, dict[str, Decimator]] = {}
        self.last: dict[str, float] = {}
        self.lines: list[str] = []  # what the header says: adapter, how Stop works, data warnings, capacity
        self.run: TrainRun | None = None
        self.slot = Slot()
        self._build()

    # -- what each front end does ----------------------------------------------------------------
    def _build(self) -> None:
        """Make the front end's widgets."""

    def _header(self) -> None:
        """Show the header lines now."""

    def draw(self) -> None:
        """Show the panels now."""

    def _ipython_display_(self) -> None:
        print(self.text())

    # -- shared ----------------------------------------------------------------------------------
    def on_train_begin(self, run: TrainRun) -> None:
        self.run, self.series, self.last = run, {}, {}
        self.lines = [line for line in (getattr(run, "note", ""), getattr(run, "target_note", "")) if line]
        self._header()

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        family = getattr(run, "family", "trainer")
        for key in extra_keys(record):
            panel = self.series.setdefault(panel_of(family, key), {})
            panel.setdefault(key, Decimator(self.max_points)).add(record["step"], record[key])
            self.last[key] = record[key]
        if self.slot.handle is not None and self.throttle.ready():  # hidden: nothing drawn
            self.draw()

    def on_train_end(self, run: TrainRun) -> None:
        if self.slot.handle is None:
            return
        self.draw()
        if run.state == "failed":  # the widgets stay beside the dashboard's readable error
            return
        self.lines = [line for line in self.lines if line != getattr(run, "note", "")]  # how to stop: said
        text, specs = self.text(), self.specs()
        lines = "<div>" + "<br>".join(html.escape(line) for line in self.header_lines()) + "</div>"
        bundle = picture_bundle(specs, text) if specs else {"text/plain": text, "text/html": ""}
        bundle["text/html"] = lines + bundle["text/html"]  # the adapter, data warnings and capacity, then the panels
        self.slot.show(bundle, raw=True)
        if self.widget is not None:  # a saved notebook keeps the picture, not widgets without a kernel
            close_tree(self.widget)
            self.widget = None

    def titles(self) -> list[str]:
        """The panels' titles: the trainer family's own first, then the others in the order they were logged."""
        return panel_order(getattr(self.run, "family", "trainer"), list(self.series))

    def specs(self) -> list[dict]:
        return [panel_spec(t, {k: d.arrays() for k, d in self.series[t].items()}) for t in self.titles()]

    def text(self) -> str:
        """The panels' latest values as lines (what a text front end prints, what a picture's alt text says)."""
        lines = self.header_lines()
        for title in self.titles():
            keys = self.series[title]
            values = ", ".join(f"{k} {self.last[k]:.4g}" for k in keys if k in self.last)
            lines.append(f"{title}: {values}")
        return "\n".join(lines)

    def header_lines(self) -> list[str]:
        """The adapter watched, how Stop works, the first batch's data warnings and the capacity gauge."""
        run = self.run
        lines = [*self.lines, *getattr(run, "data_notes", ())]
        if run is not None and run.history and run.history[-1].get("supervised_tokens"):
            lines.append(Capacity(run.trainable, run.history[-1]["supervised_tokens"]).line())
        return lines


class WidgetMetricPanels(MetricPanels):
    """The panels as core ipywidgets: the header and a chart per panel, a static picture once the run ended."""

    ui = "widget"

    def _build(self) -> None:
        import ipywidgets as widgets

        self.charts: dict[str, Any] = {}
        self.header = widgets.HTML()
        self.widget = widgets.VBox([self.header])

    def _header(self) -> None:
        if self.widget is not None:
            self.header.value = "<br>".join(html.escape(line) for line in self.header_lines())

    def draw(self) -> None:
        self._header()
        if self.widget is None:
            return
        from .chart import Chart

        titles = self.titles()
        if any(title not in self.charts for title in titles):  # a new panel: in its place among the others
            self.charts.update({title: Chart() for title in titles if title not in self.charts})
            self.widget.children = (self.header, *[self.charts[title] for title in titles])
        for spec, title in zip(self.specs(), titles):
            self.charts[title].draw(spec)

    def _ipython_display_(self) -> None:
        if self.widget is None:  # the run ended: its picture
            return super()._ipython_display_()
        from .compat import widget_bundle

        self.slot.show(widget_bundle(self.widget), raw=True)


class StaticMetricPanels(MetricPanels):
    """The panels as one output updated in place (a picture with the values as text): no widgets."""

    ui = "static"

    def draw(self) -> None:
        if self.specs():
            self.slot.show(picture_bundle(self.specs(), self.text()), raw=True)

    def _ipython_display_(self) -> None:
        self.slot.show({"text/plain": self.text() or "<trainer panels>"}, raw=True)


class TextMetricPanels(MetricPanels):
    """The panels' latest values as printed lines (a terminal, a script)."""

    ui = "text"


FRONT_ENDS = {"widget": WidgetMetricPanels, "static": StaticMetricPanels, "text": TextMetricPanels}


class TrainerWatch:
    """A watched trainer: its live dashboard and panels, ``history`` (the same shape as a lora_nb run's), ``run``,
    and the controls ``stop()``, ``pause()``, ``resume()``, ``wait()``."""

    def __init__(self, trainer: Any, ui: str = "auto", background: bool = False, spectra: bool = True,
                 interval: float = 0.25) -> None:
        from ..core.watch.attach import check_trainer, watch_trainer

        check_trainer(trainer)
        mode = resolve_ui(ui)
        self.trainer, self.background = trainer, background
        self.dashboard = LiveDashboard(show_on_begin=not background, interval=interval, ui=mode)
        self.panels = MetricPanels(ui=mode)
        self.callback: WatchCallback = watch_trainer(trainer, [self.dashboard, _ShowPanels(self.panels, background),
                                                               self.panels], background=background, spectra=spectra)
        self.thread: Any = None

    @property
    def run(self) -> WatchedRun | None:
        return self.callback.run

    @property
    def history(self) -> list[dict]:
        """One record per training log: ``step``, ``loss``, ``lr``, ``grad_norm`` … and what the trainer logged."""
        return self.callback.history

    @property
    def evals(self) -> list[dict]:
        return self.run.evals if self.run is not None else []

    @property
    def model(self) -> Any:
        """The trainer's model: what the after-run verbs take (``lora_nb.advise(view.model)``, ``%lora history``)."""
        return self.trainer.model

    def stop(self) -> None:
        """End the trainer's run at the next step boundary (its state intact; it saves a checkpoint if it saves)."""
        if self.run is not None:
            self.run.stop()

    def pause(self) -> None:
        if self.run is not None:
            self.run.pause()

    def resume(self) -> None:
        if self.run is not None:
            self.run.resume()

    def wait(self, timeout: float | None = None) -> TrainerWatch:
        """Block until a background ``fit`` ended (or ``timeout`` passed)."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self

    def __repr__(self) -> str:
        run = self.run
        where = f"{run.state}: {run.summary_line()}" if run is not None else "waiting for trainer.train()"
        return f"<lora_nb watch of {type(self.trainer).__name__}: {where}>"

    def _ipython_display_(self) -> None:
        self.dashboard._ipython_display_()
        self.panels._ipython_display_()


class _ShowPanels(Callback):
    """Displays the panels under the dashboard when a run in this cell begins (a background run shows its view
    when ``fit`` returns it)."""

    def __init__(self, panels: MetricPanels, background: bool) -> None:
        self.panels, self.background = panels, background

    def on_train_begin(self, run: TrainRun) -> None:
        if not self.background and self.panels.slot.handle is None and self.panels.widget is not None:
            self.panels._ipython_display_()


def watch(trainer: Any, ui: str = "auto", spectra: bool = True) -> TrainerWatch:
    """Show lora_nb's live dashboard whenever ``trainer.train()`` runs; returns the view (``view.history`` …)."""
    return TrainerWatch(trainer, ui=ui, spectra=spectra)


def fit(trainer: Any, ui: str = "auto", spectra: bool = True, background: bool | None = None,
        **train_kwargs: Any) -> TrainerWatch:
    """Watch ``trainer`` and run ``trainer.train(**train_kwargs)`` in a background thread, so the dashboard's Stop
    and Pause can be pressed while it trains; returns the view at once (``view.wait()`` blocks until it ends).

    In Colab, which shows no updates sent from a thread, it trains in the cell (``background`` None: decided so),
    and the interrupt button (■) stops the run at a step boundary."""
    from ..core.watch.attach import train_in_background

    background = not in_colab() if background is None else background
    say_once("" if background else COLAB_NOTE)
    view = TrainerWatch(trainer, ui=ui, background=background, spectra=spectra)
    if background:
        view.thread = train_in_background(trainer, view.callback, train_kwargs)
    else:
        trainer.train(**train_kwargs)
    return view


def callback(ui: str = "auto", spectra: bool = True) -> WatchCallback:
    """A bare ``TrainerCallback`` for ``Trainer(…, callbacks=[lora_nb.callback()])``: it shows the dashboard when the
    run begins (no Stop button while it trains in the cell; ``lora_nb.fit`` gives one)."""
    from ..core.watch.callback import WatchCallback

    mode = resolve_ui(ui)
    panels = MetricPanels(ui=mode)
    return WatchCallback([LiveDashboard(show_on_begin=True, ui=mode), _ShowPanels(panels, False), panels],
                         spectra=spectra)
