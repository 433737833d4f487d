"""Weights, spectrum and similarity explorers: SVG charts driven by dropdowns, live during training.

Each chart is a core ``ipywidgets.HTML`` holding an SVG (``Chart``): no custom JavaScript, so the
views render in JupyterLab, Notebook 7, VS Code and Colab alike. A live explorer is a training
callback: while a run trains the model it refreshes at most every ``interval`` seconds, and never
more often than keeps its own cost under ``budget`` (5%) of the wall time. It also listens to the
session, so adapter changes made by magics or code (attach, delete, toggle …) show up at once.
Displayed, an explorer also carries an SVG picture of its main chart for tools without widgets
(nbconvert, GitHub); ``close()`` releases its widgets and stops it following the model.
"""

from __future__ import annotations

import contextlib
import html
import re
import time
from collections.abc import Callable

import ipywidgets as W

from ..core import registry
from ..core.analysis.learned.spectra import similarity, spectra
from ..core.analysis.learned.weights import matrices, weights
from ..core.training.callbacks import Callback
from ..errors import LoraNBError
from ..markup import error_html
from ..viz.spectra import base_spectrum_spec, effective_rank_spec, similarity_spec, spectrum_spec
from ..viz.svg import render
from ..viz.weights import VALUE_LABELS, histogram_spec, module_specs, norm_map_spec
from .chart import Chart
from .compat import BundleDisplay, widget_bundle
from .ui import close_tree, set_options


class LiveView(BundleDisplay, Callback):
    """Refresh on training steps (time-throttled, within a cost budget) and on adapter changes."""

    interval = 3.0  # seconds between live refreshes at most
    budget = 0.05  # fraction of wall time a live view may spend refreshing

    def _start_live(self, model, clock: Callable[[], float] | None) -> None:
        self.session = registry.require(model)
        self.clock = clock or time.monotonic
        self.next_refresh = 0.0
        self.live_refreshes = 0
        self.live_seconds = 0.0  # time spent refreshing on the training thread
        self.live_run = None
        self.session.listeners.add(self)
        self.follow_run()

    def picture(self) -> Chart:
        """The view's main chart: what viewers that show only an image keep."""
        raise NotImplementedError

    def charts(self) -> list[Chart]:
        """Every chart the view shows now (what a saved notebook keeps)."""
        return [self.picture()]

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus every chart (each with its sentence) as HTML and the main chart as SVG for tools without
        a widget manager (nbconvert, GitHub); the text says what the SVG alone leaves out.

        Widget front ends prefer the widget (its renderer ranks first); the others show the charts as
        they were when displayed.
        """
        bundle = widget_bundle(self, **kwargs)
        charts = [c for c in self.charts() if c.spec is not None]
        bundle["text/html"] = "".join(c.value for c in charts)
        bundle["image/svg+xml"] = render(self.picture().spec)
        if len(charts) > 1:
            bundle["text/plain"] = (f"{self!r} (as an image: its first chart only; as HTML: all {len(charts)} "
                                    "charts)")
        return bundle

    def close(self) -> None:
        """Close every widget of the view and stop following the model and its run."""
        session, run = getattr(self, "session", None), getattr(self, "live_run", None)
        if session is not None:  # (also called by ipywidgets when a half-built view is collected)
            session.listeners.discard(self)
        if run is not None:
            with contextlib.suppress(ValueError):  # the loop iterates over a copy; list.remove is atomic
                run.callbacks.remove(self)
            self.live_run = None
        for child in (*self.children, self.layout):
            close_tree(child)
        W.VBox.close(self)

    def follow_run(self) -> None:
        """Attach to the session's run while it trains (``run.add_callback(self)``)."""
        if self.comm is None:  # closed
            return
        run = self.session.run
        if run is not None and run is not self.live_run and getattr(run, "state", None) in ("running", "paused"):
            run.add_callback(self)
            self.live_run = run

    def on_step_end(self, run, record: dict) -> None:
        now = self.clock()
        if now < self.next_refresh:
            return
        try:
            self.refresh()
        except Exception as exc:
            self._show_error(exc)
            self.next_refresh = float("inf")
            return
        cost = self.clock() - now
        self.live_refreshes += 1
        self.live_seconds += cost
        self.next_refresh = now + max(self.interval, cost / self.budget)

    def on_train_end(self, run) -> None:
        if self.comm is not None:
            self.refresh()

    def on_model_change(self, session, what: str) -> None:
        if self.comm is not None:
            self.follow_run()
            self.refresh()

    def refresh(self) -> None:  # pragma: no cover - every view overrides it
        raise NotImplementedError

    def __repr__(self) -> str:  # the text/plain of a saved notebook: one line, not every trace
        what = f"adapters `{self.a}` and `{self.b}`" if hasattr(self, "b") else f"adapter `{self.adapter}`"
        return f"<{type(self).__name__} of {what}: {len(self.module.options)} modules>"

    def _show_error(self, exc: Exception) -> None:
        text = str(exc) if isinstance(exc, LoraNBError) else f"{type(exc).__name__}: {exc}"
        self.message.value = error_html(text)


def _module_dropdown(names: list[str]) -> W.Dropdown:
    return W.Dropdown(options=names, value=names[0] if names else None, description="module",
                      layout=W.Layout(width="520px"))


class WeightsExplorer(LiveView, W.VBox):
    """Norm map of the whole adapter, then A, B, ΔW heatmaps and histograms of the chosen module.

    The module is chosen by name, or by layer and module type (the rows and columns of the norm map).
    """

    def __init__(self, model, adapter: str | None = None, layers: str | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.model, self.layers = model, layers
        self.summary = weights(model, adapter, layers)
        self.adapter = self.summary.adapter
        self.color_by = W.Dropdown(options=[(v, k) for k, v in VALUE_LABELS.items()], value="delta_norm",
                                   description="color by")
        self.module = _module_dropdown(list(self.summary))
        nm = self.summary.norm_map()
        widest = max((len(str(r)) for r in nm.rows), default=8)  # the whole layer name stays readable
        self.layer = W.Dropdown(options=list(nm.rows), description="layer",
                                layout=W.Layout(width=f"{min(480, 110 + 8 * widest)}px"))
        self.kind = W.Dropdown(options=list(nm.cols), description="type", layout=W.Layout(width="300px"))
        self.message = W.HTML()
        self.norm = Chart(norm_map_spec(self.summary))
        self.heatmaps = {k: Chart(layout=W.Layout(width="33%")) for k in ("A", "B", "ΔW")}
        self.histogram = Chart()
        self._draw_module()
        self._picking = False
        self.color_by.observe(lambda _: self._draw_norms(), "value")
        self.module.observe(lambda _: self._draw_module(), "value")
        self.layer.observe(self._picked, "value")
        self.kind.observe(self._picked, "value")
        super().__init__([W.HBox([self.color_by, self.module]), W.HBox([self.layer, self.kind]), self.message,
                          self.norm, W.HBox(list(self.heatmaps.values())), self.histogram])
        self._start_live(model, clock)

    def picture(self) -> Chart:
        return self.norm

    def charts(self) -> list[Chart]:
        return [self.norm, *self.heatmaps.values(), self.histogram]

    def select(self, layer: str, kind: str) -> None:
        """Choose the module at norm-map row ``layer`` and column ``kind`` (no module there: nothing changes)."""
        nm = self.summary.norm_map(self.color_by.value)
        if str(layer) in nm.rows and kind in nm.cols:
            name = nm.names[nm.rows.index(str(layer))][nm.cols.index(kind)]
            if name:
                self.module.value = name

    def _picked(self, _change=None) -> None:
        if not self._picking:
            self.select(self.layer.value, self.kind.value)

    def _draw_norms(self) -> None:
        self.norm.draw(norm_map_spec(self.summary, self.color_by.value))

    def _draw_module(self) -> None:
        mm = matrices(self.model, self.module.value, self.adapter)
        for key, spec in module_specs(mm).items():
            spec["layout"].update(height=300, width=380)  # drawn about the size it is shown at (a third of a row)
            self.heatmaps[key].draw(spec)
        self.histogram.draw(histogram_spec(mm))
        nm = self.summary.norm_map()
        for i, row in enumerate(nm.names):  # the pickers follow the chosen module
            if self.module.value in row:
                self._picking = True
                try:
                    self.layer.value, self.kind.value = nm.rows[i], nm.cols[row.index(self.module.value)]
                finally:
                    self._picking = False

    def refresh(self) -> None:
        """Re-read the adapter (a consistent snapshot) and redraw."""
        try:
            self.summary = weights(self.model, self.adapter, self.layers)
        except LoraNBError as exc:
            return self._show_error(exc)
        self.message.value = ""
        names = list(self.summary)
        set_options(self.module, names)
        self._draw_norms()
        self._draw_module()


class SpectrumExplorer(LiveView, W.VBox):
    """ΔW's singular values per module (and W vs W+ΔW with ``base``), plus the effective-rank summary."""

    def __init__(self, model, adapter: str | None = None, layers: str | None = None, base: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        self.model, self.layers, self.base = model, layers, base
        self.result = spectra(model, adapter, layers=layers)
        self.adapter = self.result.adapter
        self.module = _module_dropdown(list(self.result))
        self.message = W.HTML()
        self.bars = Chart(spectrum_spec(self.result, self.module.value))
        self.base_fig = Chart(self._base_spec()) if base else None
        self.ranks = Chart(effective_rank_spec(self.result, self.module.value))
        self.module.observe(lambda _: self._draw_module(), "value")
        parts = [self.module, self.message, self.bars, *([self.base_fig] if base else []), self.ranks]
        super().__init__(parts)
        self._start_live(model, clock)

    def picture(self) -> Chart:
        return self.bars

    def charts(self) -> list[Chart]:
        return [self.bars, *([self.base_fig] if self.base_fig is not None else []), self.ranks]

    def _base_spec(self) -> dict:
        """W vs W+ΔW for the chosen module only: computed lazily (dense SVDs), cached in core."""
        name = self.module.value
        out, inp, _ = self.result.shapes[name]
        self.message.value = f"computing the singular values of W and W+ΔW ({out}×{inp}) of <code>{name}</code>…"
        one = spectra(self.model, self.adapter, base=True, layers="^" + re.escape(name) + "$")
        self.message.value = html.escape(" ".join(one.notes))
        return base_spectrum_spec(one, name)

    def _draw_module(self) -> None:
        self.bars.draw(spectrum_spec(self.result, self.module.value))
        if self.base_fig is not None:
            self.base_fig.draw(self._base_spec())
        if hasattr(self, "ranks"):  # the chosen module is outlined in the summary
            self.ranks.draw(effective_rank_spec(self.result, self.module.value))

    def refresh(self) -> None:
        """Recompute the spectra (cheap: r × r SVDs) and redraw."""
        try:
            self.result = spectra(self.model, self.adapter, layers=self.layers)
        except LoraNBError as exc:
            return self._show_error(exc)
        self.message.value = ""
        set_options(self.module, list(self.result))
        self._draw_module()


class SimilarityView(LiveView, W.VBox):
    """φ(i, j) heatmap between two adapters, one module at a time."""

    def __init__(self, model, a: str, b: str, layers: str | None = None, other=None,
                 clock: Callable[[], float] | None = None) -> None:
        self.model, self.a, self.b, self.layers, self.other = model, a, b, layers, other
        self.result = similarity(model, a, b, layers, other)
        self.module = _module_dropdown(list(self.result))
        self.message = W.HTML()
        self.heatmap = Chart(similarity_spec(self.result, self.module.value))
        self.module.observe(lambda _: self._draw(), "value")
        super().__init__([self.module, self.message, self.heatmap])
        self._start_live(model, clock)

    def picture(self) -> Chart:
        return self.heatmap

    def _draw(self) -> None:
        self.heatmap.draw(similarity_spec(self.result, self.module.value))

    def refresh(self) -> None:
        try:
            self.result = similarity(self.model, self.a, self.b, self.layers, self.other)
        except LoraNBError as exc:
            return self._show_error(exc)
        self.message.value = ""
        set_options(self.module, list(self.result))
        self._draw()

