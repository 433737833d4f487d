"""Figure builders: pure functions from core results to plotly-shaped dicts (``*_spec``) and ``go.Figure``s.

A spec is ``{"data": [trace dicts], "layout": {...}}`` exactly as plotly reads it: ``svg.render(spec)``
draws it without plotly, ``figure(spec)`` makes the ``go.Figure`` (plotly is imported only then).
"""

from __future__ import annotations

from typing import Any


def figure(spec: dict) -> Any:
    """The ``plotly.graph_objects.Figure`` of a spec."""
    import plotly.graph_objects as go

    return go.Figure(spec)


def panel_layout(title: str, x_title: str | None, y_title: str | None, height: int, **more: Any) -> dict:
    """A one-panel layout with titles (``xaxis`` / ``yaxis`` options merged from ``more``)."""
    out = {"title": {"text": title}, "height": height, "margin": {"t": 50, "b": 40},
           "xaxis": {"title": {"text": x_title}} if x_title else {},
           "yaxis": {"title": {"text": y_title}} if y_title else {}}
    for key in ("xaxis", "yaxis"):
        out[key].update(more.pop(key, {}))
    return {**out, **more}
