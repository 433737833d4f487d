"""``Chart``: a figure drawn as SVG inside a core ``ipywidgets.HTML`` (no custom JavaScript: every front end)."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..viz import figure
from .compat import BundleDisplay, widget_bundle
from .ui import figure_html


class Chart(W.HTML):
    """An ``HTML`` widget holding the SVG of a spec (and the sentence under it that explains a term the chart uses);
    ``.spec`` is the data, ``.figure`` the plotly ``go.Figure``."""

    def __init__(self, spec: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec: dict | None = None
        self.draws = 0  # SVGs sent
        self.sent_bytes = 0
        if spec is not None:
            self.draw(spec)

    def draw(self, spec: dict) -> bool:
        """Show ``spec``; sends nothing when the picture did not change. True when it sent a new SVG."""
        self.spec = spec
        svg = figure_html(spec)
        if svg == self.value:
            return False
        self.value = svg
        self.draws += 1
        self.sent_bytes += len(svg)
        return True

    def clear(self) -> None:
        """Show nothing (until the next ``draw``)."""
        self.spec = None
        self.value = ""

    @property
    def figure(self) -> Any:
        """The chart as a plotly ``go.Figure`` (for further styling or export)."""
        return figure(self.spec) if self.spec is not None else None


class ViewBox(BundleDisplay, W.VBox):
    """A view's top widget that also carries an HTML picture of its state for tools without widgets."""

    def __init__(self, children: list, fallback: Any, **kwargs: Any) -> None:
        super().__init__(children, **kwargs)
        self._fallback = fallback  # () -> HTML of the view's current state

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        bundle = widget_bundle(self, **kwargs)
        bundle["text/html"] = self._fallback()
        return bundle
