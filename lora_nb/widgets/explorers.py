"""Weights, spectrum and similarity explorers: FigureWidgets driven by dropdowns, live during training.

A live explorer is a training callback: while a run trains the model it refreshes at most
every ``interval`` seconds, and never more often than keeps its own cost under ``budget``
(5%) of the wall time. It also listens to the session, so adapter changes made by magics
or code (attach, delete, toggle …) show up at once.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio

from ..core import registry
from ..core.analysis.spectra import similarity, spectra
from ..core.analysis.weights import matrices, weights
from ..core.training.callbacks import Callback
from ..errors import LoraNBError
from ..viz.spectra import (
    base_spectrum_figure,
    effective_rank_figure,
    similarity_figure,
    spectrum_figure,
    spectrum_title,
)
from ..viz.weights import (
    VALUE_LABELS,
    diverging_range,
    histogram_figure,
    module_figures,
    norm_map_figure,
    norm_z,
    value_histogram,
)


def _replace(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Put ``fig``'s data and layout into ``widget`` in one message when the trace types match."""
    with widget.batch_update():
        if [t.type for t in widget.data] == [t.type for t in fig.data]:
            for old, new in zip(widget.data, fig.data):
                old.update({k: v for k, v in new.to_plotly_json().items() if k != "type"}, overwrite=True)
        else:
            widget.data = ()
            widget.add_traces(fig.data)
        widget.layout.update({k: v for k, v in fig.layout.to_plotly_json().items() if k != "template"})


class LiveView(Callback):
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

    def picture(self) -> go.FigureWidget:
        """The view's main figure: what a saved notebook keeps as a static picture."""
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus its main figure as plotly JSON for static views (nbconvert, untrusted notebooks).

        JupyterLab prefers the widget (its renderer ranks first); tools without a widget manager show the
        figure as it was when displayed.
        """
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["application/vnd.plotly.v1+json"] = json.loads(pio.to_json(go.Figure(self.picture()), validate=False))
        return bundle

    def follow_run(self) -> None:
        """Attach to the session's run while it trains (``run.add_callback(self)``)."""
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
        self.refresh()

    def on_model_change(self, session, what: str) -> None:
        self.follow_run()
        self.refresh()

    def refresh(self) -> None:  # pragma: no cover - every view overrides it
        raise NotImplementedError

    def __repr__(self) -> str:  # the text/plain of a saved notebook: one line, not every trace
        what = f"adapters `{self.a}` and `{self.b}`" if hasattr(self, "b") else f"adapter `{self.adapter}`"
        return f"<{type(self).__name__} of {what}: {len(self.module.options)} modules>"

    def _show_error(self, exc: Exception) -> None:
        text = str(exc) if isinstance(exc, LoraNBError) else f"{type(exc).__name__}: {exc}"
        self.message.value = f"<span style='color:#b00'>{html.escape(text)}</span>"


def _module_dropdown(names: list[str]) -> W.Dropdown:
    return W.Dropdown(options=names, value=names[0] if names else None, description="module",
                      layout=W.Layout(width="520px"))


class WeightsExplorer(LiveView, W.VBox):
    """Norm map of the whole adapter, then A, B, ΔW heatmaps and histograms of the chosen module."""

    def __init__(self, model, adapter: str | None = None, layers: str | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.model, self.layers = model, layers
        self.summary = weights(model, adapter, layers)
        self.adapter = self.summary.adapter
        self.color_by = W.Dropdown(options=[(v, k) for k, v in VALUE_LABELS.items()], value="delta_norm",
                                description="color by")
        self.module = _module_dropdown(list(self.summary))
        self.message = W.HTML()
        self.norm = go.FigureWidget(norm_map_figure(self.summary))
        mm = matrices(model, self.module.value, self.adapter)
        self.heatmaps = {k: go.FigureWidget(f) for k, f in module_figures(mm).items()}
        self.histogram = go.FigureWidget(histogram_figure(mm))
        self.norm.data[0].on_click(self._clicked)
        self.color_by.observe(lambda _: self._draw_norms(), "value")
        self.module.observe(lambda _: self._draw_module(), "value")
        super().__init__([W.HBox([self.color_by, self.module]), self.message, self.norm,
                          W.HBox(list(self.heatmaps.values())), self.histogram])
        self._start_live(model, clock)

    def picture(self) -> go.FigureWidget:
        return self.norm

    def _clicked(self, trace, points, state) -> None:
        """A click on a norm-map cell (heatmap point index ``[row, col]``) selects that module."""
        nm = self.summary.norm_map(self.color_by.value)
        for index, x, y in zip(points.point_inds, points.xs, points.ys):
            if isinstance(index, (list, tuple)) and len(index) == 2:
                i, j = index
            else:  # no [row, col] from the frontend: go by the axis labels
                i, j = nm.rows.index(str(y)), nm.cols.index(str(x))
            if nm.names[i][j]:
                self.module.value = nm.names[i][j]

    def _draw_norms(self) -> None:
        _replace(self.norm, norm_map_figure(self.summary, self.color_by.value))

    def _draw_module(self) -> None:
        mm = matrices(self.model, self.module.value, self.adapter)
        for key, fig in module_figures(mm).items():
            _replace(self.heatmaps[key], fig)
        _replace(self.histogram, histogram_figure(mm))

    def refresh(self) -> None:
        """Re-read the adapter (a consistent snapshot) and send only the new numbers."""
        try:
            self.summary = weights(self.model, self.adapter, self.layers)
        except LoraNBError as exc:
            return self._show_error(exc)
        self.message.value = ""
        names = list(self.summary)
        if list(self.module.options) != names:
            self.module.options = names  # redraws the module through the dropdown
        with self.norm.batch_update():
            self.norm.data[0].z = norm_z(self.summary.norm_map(self.color_by.value))
        mm = matrices(self.model, self.module.value, self.adapter)
        for key, m in (("A", mm.A), ("B", mm.B), ("ΔW", mm.delta)):
            with self.heatmaps[key].batch_update():
                trace = self.heatmaps[key].data[0]
                trace.z, (trace.zmin, trace.zmax) = m, diverging_range(m)
        with self.histogram.batch_update():
            for trace, values in zip(self.histogram.data, (mm.a_values, mm.b_values)):
                trace.x, trace.y, trace.width = value_histogram(values)


class SpectrumExplorer(LiveView, W.VBox):
    """ΔW's singular values per module (and W vs W+ΔW with ``base``), plus the effective-rank summary."""

    def __init__(self, model, adapter: str | None = None, layers: str | None = None, base: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        self.model, self.layers, self.base = model, layers, base
        self.result = spectra(model, adapter, layers=layers)
        self.adapter = self.result.adapter
        self.module = _module_dropdown(list(self.result))
        self.message = W.HTML()
        self.bars = go.FigureWidget(spectrum_figure(self.result, self.module.value))
        self.base_fig = go.FigureWidget(self._base_figure()) if base else None
        self.ranks = go.FigureWidget(effective_rank_figure(self.result))
        self.module.observe(lambda _: self._draw_module(), "value")
        parts = [self.module, self.message, self.bars, *([self.base_fig] if base else []), self.ranks]
        super().__init__(parts)
        self._start_live(model, clock)

    def picture(self) -> go.FigureWidget:
        return self.bars

    def _base_figure(self) -> go.Figure:
        """W vs W+ΔW for the chosen module only: computed lazily (dense SVDs), cached in core."""
        name = self.module.value
        out, inp, _ = self.result.shapes[name]
        self.message.value = f"computing the singular values of W and W+ΔW ({out}×{inp}) of <code>{name}</code>…"
        one = spectra(self.model, self.adapter, base=True, layers="^" + re.escape(name) + "$")
        self.message.value = html.escape(" ".join(one.notes))
        return base_spectrum_figure(one, name)

    def _draw_module(self) -> None:
        _replace(self.bars, spectrum_figure(self.result, self.module.value))
        if self.base_fig is not None:
            _replace(self.base_fig, self._base_figure())

    def refresh(self) -> None:
        """Recompute the spectra (cheap: r × r SVDs) and send only the new numbers."""
        try:
            self.result = spectra(self.model, self.adapter, layers=self.layers)
        except LoraNBError as exc:
            return self._show_error(exc)
        self.message.value = ""
        if list(self.module.options) != list(self.result):
            self.module.options = list(self.result)
        name = self.module.value
        with self.bars.batch_update():
            self.bars.data[0].y = self.result[name]
            self.bars.layout.title.text = spectrum_title(self.result, name)
        if self.base_fig is not None:
            _replace(self.base_fig, self._base_figure())
        with self.ranks.batch_update():
            self.ranks.data[0].y = [self.result.stats[n].effective_rank for n in self.result]
            self.ranks.data[1].y = [self.result.stats[n].stable_rank for n in self.result]


class SimilarityView(LiveView, W.VBox):
    """φ(i, j) heatmap between two adapters, one module at a time."""

    def __init__(self, model, a: str, b: str, layers: str | None = None, other=None,
                 clock: Callable[[], float] | None = None) -> None:
        self.model, self.a, self.b, self.layers, self.other = model, a, b, layers, other
        self.result = similarity(model, a, b, layers, other)
        self.module = _module_dropdown(list(self.result))
        self.message = W.HTML()
        self.heatmap = go.FigureWidget(similarity_figure(self.result, self.module.value))
        self.module.observe(lambda _: self._draw(), "value")
        super().__init__([self.module, self.message, self.heatmap])
        self._start_live(model, clock)

    def picture(self) -> go.FigureWidget:
        return self.heatmap

    def _draw(self) -> None:
        _replace(self.heatmap, similarity_figure(self.result, self.module.value))

    def refresh(self) -> None:
        try:
            self.result = similarity(self.model, self.a, self.b, self.layers, self.other)
        except LoraNBError as exc:
            return self._show_error(exc)
        self.message.value = ""
        if list(self.module.options) != list(self.result):
            self.module.options = list(self.result)
        self._draw()
