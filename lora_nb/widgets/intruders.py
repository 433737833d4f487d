"""``IntruderView``: each layer's intruder dimensions, a slider that scales them, and the user's metrics live.

The curve of each metric against λ is an SVG chart (``Chart``) redrawn on every slider move; displayed, the
view also carries its table and curve as HTML for tools without widgets. ``close()`` puts the trained
factors back and releases the widgets.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from ..core.analysis.learned.intruders import IntruderDial
from ..viz.analysis import intruder_curve_spec
from .chart import Chart, ViewBox
from .ui import close_tree

Metric = Callable[[Any], float]


class IntruderView:
    """Slider λ ∈ [0, 1] over the intruder dimensions of ``model``'s adapter; ``metric`` (or a dict) re-measured.

    The model really changes while the slider is below 1; "Restore" (or λ = 1) puts the trained factors back exactly.
    """

    def __init__(self, model: Any, metric: Metric | dict[str, Metric], adapter: str | None = None, k: int = 10,
                 eps: float = 0.5, layers: str | None = None, step: float = 0.05) -> None:
        self.model = model
        self.metrics = metric if isinstance(metric, dict) else {"metric": metric}
        self.dial = IntruderDial(model, adapter, k=k, eps=eps, layers=layers)
        self.measured: dict[str, dict[float, float]] = {label: {} for label in self.metrics}
        self.slider = W.FloatSlider(value=1.0, min=0.0, max=1.0, step=step, description="intruder scale λ",
                                    continuous_update=False, style={"description_width": "initial"})
        self.restore_button = W.Button(description="Restore", tooltip="put the trained factors back exactly")
        self.table, self.readout, self.curve = W.HTML(self._table()), W.HTML(), Chart()
        self.closed = False
        self.widget = ViewBox([self.table, W.HBox([self.slider, self.restore_button]), self.readout, self.curve],
                              fallback=lambda: self.table.value + self.curve.value)
        self.slider.observe(lambda change: self.apply(change["new"]), "value")
        self.restore_button.on_click(lambda _: setattr(self.slider, "value", 1.0))
        self.apply(1.0)

    def apply(self, scale: float) -> None:
        """Scale the intruder dimensions to ``scale`` and measure every metric there."""
        self.dial.set(scale)
        values = {label: float(metric(self.model)) for label, metric in self.metrics.items()}
        for label, value in values.items():
            self.measured[label][round(scale, 6)] = value
        self.readout.value = html.escape(f"λ = {scale:.2f}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        self.curve.draw(intruder_curve_spec(self.measured, scale))

    def _table(self) -> str:
        esc = html.escape
        rows = "".join(f"<tr><td>{esc(name)}</td><td>{part.count}</td><td>"
                       f"{esc(', '.join(f'{c:.2f}' for c in part.best_cos))}</td></tr>"
                       for name, part in self.dial.layers.items())
        return (f"<b>intruder dimensions of adapter `{esc(self.dial.adapter)}` (top {self.dial.k} of W+ΔW, "
                f"best |cos| with W's &lt; {self.dial.eps})</b><table><tr><th>module</th><th>intruders</th>"
                f"<th>best |cos| of each top vector</th></tr>{rows}</table>")

    def close(self) -> None:
        """Put the trained factors back (λ = 1) and close the widgets."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.dial.scale != 1.0:
                self.dial.restore()
        finally:
            close_tree(self.widget)

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus its table and curve as HTML and the curve as SVG for tools without a widget manager."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["image/svg+xml"] = self.curve.value
        return bundle
