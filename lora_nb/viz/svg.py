"""Render the subset of plotly figures lora_nb draws to one self-contained SVG string (no JavaScript, offline).

Input is a ``go.Figure`` or its plain-dict form (``{"data": [...], "layout": {...}}``). Supported: scatter
(lines, markers, gaps at ``None``), bars (grouped or overlaid, explicit widths), heatmaps (one embedded PNG
pixel per cell, colour bar, reversed scales), subplots through axis domains, linear / log / category axes,
reversed axes, fixed axis ranges, titles, axis titles, paper-positioned annotations and a legend. Hover text
comes as SVG ``<title>`` elements (from ``hovertemplate`` where given). Long traces are thinned to about one
point per pixel.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import numpy as np

from .axes import Axis, is_category, numbers, text_px
from .marks import bar_marks, heatmap_marks, scatter_marks

COLORS = ("#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880", "#FF97FF",
          "#FECB52")
FONT = "font-family='Helvetica,Arial,sans-serif'"
LEGEND_ROW = 20
COLORBAR = 70


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def text_of(value: Any) -> str:
    """The text of a plotly title (a string or ``{"text": ...}``), without plotly's few HTML tags."""
    if isinstance(value, dict):
        value = value.get("text")
    return re.sub(r"</?(b|i|em|sup|sub|span|br)\b[^>]*>", " ", str(value)).strip() if value else ""


def decode_array(value: Any) -> Any:
    """plotly's base64 typed arrays (``{"dtype", "bdata", "shape"}``) as numpy arrays; anything else as is."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return flat.reshape([int(n) for n in str(shape).split(",")]) if shape else flat
    return value


def figure_dict(fig: Any) -> dict:
    """``{"data": [...], "layout": {...}}`` of a ``go.Figure`` (or a dict already in that form)."""
    d = fig.to_plotly_json() if hasattr(fig, "to_plotly_json") else fig
    data = [{k: decode_array(v) for k, v in t.items()} for t in d.get("data", ())]
    return {"data": data, "layout": dict(d.get("layout") or {})}


def axis_key(ref: str) -> str:
    """``"x2"`` → ``"xaxis2"``."""
    return ref[0] + "axis" + ref[1:]


class Canvas:
    """Layout of one figure: canvas size, plot area and legend entries."""

    def __init__(self, layout: dict, traces: list[dict], width: int | None, height: int | None) -> None:
        self.width = int(width or layout.get("width") or 720)
        self.height = int(height or layout.get("height") or 400)
        margin = layout.get("margin") or {}
        title = text_of(layout.get("title"))
        self.left = max(int(margin.get("l", 60)), 58)
        y_title = text_of((layout.get("yaxis") or {}).get("title") or {})
        if (labels := category_label_px(traces, "y")) > self.left - 26:  # long category names (e.g. module names)
            self.left = int(min(labels + 14 + (26 if y_title else 8), 0.4 * self.width))
        self.right = int(margin.get("r", 20)) + (COLORBAR if any(_colorbar(t) for t in traces) else 0)
        self.top = max(int(margin.get("t", 50 if title else 20)), 34 if title else 10)
        self.bottom = max(int(margin.get("b", 50)), 44)
        self.legend = legend_entries(layout, traces)
        rows, x = 1, 0
        for name, _ in self.legend:  # legend rows flowed under the plot
            w = 40 + 7 * len(name)
            if x and x + w > self.width - 20:
                rows, x = rows + 1, 0
            x += w
        self.legend_height = rows * LEGEND_ROW + 6 if self.legend else 0
        self.x0, self.x1 = self.left, self.width - self.right
        self.y0, self.y1 = self.top, self.height - self.bottom


def category_label_px(traces: list[dict], letter: str) -> float:
    """About how wide the longest text label on the ``letter`` axis is drawn (0 where its values are numbers)."""
    return text_px(v for t in traces for v in (t.get(letter) if isinstance(t.get(letter), list) else [])
                   if isinstance(v, str))


def _colorbar(trace: dict) -> bool:
    return trace.get("type") == "heatmap" and trace.get("showscale", True) is not False


def legend_entries(layout: dict, traces: list[dict]) -> list[tuple[str, dict]]:
    """``(name, trace)`` of the traces the legend lists."""
    named = [(t.get("name"), t) for t in traces if t.get("name") and t.get("showlegend", True) is not False
             and t.get("type", "scatter") != "heatmap"]
    show = layout.get("showlegend")
    return named if (show or (show is None and len(named) > 1)) else []


def trace_color(trace: dict, index: int) -> str:
    line, marker = trace.get("line") or {}, trace.get("marker") or {}
    color = line.get("color") or marker.get("color")
    return color if isinstance(color, str) else COLORS[index % len(COLORS)]


def build_axes(layout: dict, traces: list[dict], canvas: Canvas) -> dict[str, Axis]:
    """Every axis the traces use, placed by its domain and fitted to its data."""
    refs = {t.get("xaxis", "x") for t in traces} | {t.get("yaxis", "y") for t in traces} | {"x", "y"}
    axes = {}
    for ref in sorted(refs):
        opts = dict(layout.get(axis_key(ref)) or {})
        d0, d1 = opts.get("domain") or (0.0, 1.0)
        if ref[0] == "x":
            span = canvas.x1 - canvas.x0
            axis = Axis(ref, canvas.x0 + d0 * span, canvas.x0 + d1 * span)
        else:
            span = canvas.y1 - canvas.y0
            axis = Axis(ref, canvas.y1 - d0 * span, canvas.y1 - d1 * span)
        axis.options = opts
        axis.reversed = opts.get("autorange") == "reversed"
        axis.kind = {"log": "log", "category": "category"}.get(opts.get("type"), "linear")
        axes[ref] = axis
    for ref, axis in axes.items():
        fit_axis(axis, [t for t in traces if t.get(ref[0] + "axis", ref[0]) == ref])
        span = axis.options.get("range")
        if span is not None and len(span) == 2 and None not in span:  # in axis coordinates, as plotly reads it
            axis.lo, axis.hi = sorted(float(v) for v in span)
            axis.reversed = axis.reversed != (float(span[0]) > float(span[1]))
    return axes


def _values(trace: dict, letter: str):
    values = trace.get(letter)
    if trace.get("type") == "heatmap" and values is None:
        z = trace.get("z")
        z = [] if z is None else z
        n = (len(z[0]) if len(z) else 0) if letter == "x" else len(z)
        values = list(range(n))
    return values


def fit_axis(axis: Axis, traces: list[dict]) -> None:
    """Category list and range of ``axis`` from the traces drawn on it."""
    letter = axis.name[0]
    columns = [_values(t, letter) for t in traces]
    if axis.kind == "linear" and any(is_category(c) for c in columns):
        axis.kind = "category"
    if axis.kind == "category":
        for c in columns:
            for v in (c if c is not None else ()):
                if str(v) not in axis.categories:
                    axis.categories.append(str(v))
    coords, pad, zero = [np.zeros(0)], 0.0, False
    for t, c in zip(traces, columns):
        kind = t.get("type", "scatter")
        pos = axis.positions(c if c is not None else [])
        if kind == "heatmap" or (kind == "bar" and letter == "x"):
            step = np.nanmin(np.diff(pos)) if np.sum(np.isfinite(pos)) > 1 else 1.0
            half = (float(t["width"]) if kind == "bar" and np.isscalar(t.get("width")) else step) / 2
            pos = np.concatenate([pos - half, pos + half])
        elif kind == "bar":
            zero = True
            pad = max(pad, 0.05)
        else:
            mode = t.get("mode", "lines")
            pad = max(pad, 0.06 if "markers" in mode or letter == "y" else 0.0)
        coords.append(pos)
    data = np.concatenate([axis.positions(c) for c in columns if c is not None] or [np.zeros(0)])
    finite = data[np.isfinite(data)]
    axis.integer = axis.kind == "linear" and finite.size > 0 and bool(np.all(finite == np.round(finite)))
    axis.fit(np.concatenate(coords), pad, include_zero=zero and axis.kind == "linear")


def draw_axis(axis: Axis, other: Axis) -> list[str]:
    """Grid lines, tick labels and the title of ``axis``; ``other`` is the axis it crosses."""
    out, title = [], text_of(axis.options.get("title") or {})
    lo, hi = sorted((other.p0, other.p1))
    for coord, label in axis.ticks():
        p = float(axis.to_px(coord))
        if axis.name[0] == "x" and axis.rotate:
            out.append(f"<text transform='translate({p + 3:.1f},{hi + 10:.1f}) rotate(-35)' text-anchor='end'>"
                       f"{esc(label)}</text>")
        elif axis.name[0] == "x":
            out.append(f"<line x1='{p:.1f}' x2='{p:.1f}' y1='{lo:.1f}' y2='{hi:.1f}' stroke='#eee'/>"
                       f"<text x='{p:.1f}' y='{hi + 14:.1f}' text-anchor='middle'>{esc(label)}</text>")
        else:
            out.append(f"<line x1='{lo:.1f}' x2='{hi:.1f}' y1='{p:.1f}' y2='{p:.1f}' stroke='#eee'/>"
                       f"<text x='{lo - 4:.1f}' y='{p + 4:.1f}' text-anchor='end'>{esc(label)}</text>")
    if title and axis.name[0] == "x":
        below = hi + (axis.slanted_px + 16 if axis.rotate else 32)
        out.append(f"<text x='{(axis.p0 + axis.p1) / 2:.1f}' y='{below:.1f}' text-anchor='middle'>{esc(title)}</text>")
    elif title:
        x, y = lo - max(46, axis.label_px + 16), (axis.p0 + axis.p1) / 2
        out.append(f"<text transform='translate({x:.1f},{y:.1f}) rotate(-90)' text-anchor='middle'>{esc(title)}</text>")
    box = (f"<rect x='{lo:.1f}' y='{min(axis.p0, axis.p1):.1f}' width='{hi - lo:.1f}' "
           f"height='{abs(axis.p1 - axis.p0):.1f}' fill='none' stroke='#bbb'/>") if axis.name[0] == "y" else ""
    return [box, *out]


def draw_annotations(layout: dict, canvas: Canvas) -> list[str]:
    """Annotations at paper coordinates (subplot titles and notes)."""
    out = []
    for a in layout.get("annotations") or ():
        x = canvas.x0 + float(a.get("x", 0.5)) * (canvas.x1 - canvas.x0)
        y = canvas.y1 - float(a.get("y", 1.0)) * (canvas.y1 - canvas.y0)
        y += {"bottom": -5, "top": 12, "middle": 4}.get(a.get("yanchor", "middle"), 4)
        anchor = {"left": "start", "right": "end"}.get(a.get("xanchor", "center"), "middle")
        out.append(f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='13'>"
                   f"{esc(text_of(a.get('text')))}</text>")
    return out


def draw_legend(canvas: Canvas, colors: dict[int, str]) -> list[str]:
    out, x, y = [], 20.0, canvas.height + 14
    for name, trace in canvas.legend:
        w = 40 + 7 * len(name)
        if x > 20 and x + w > canvas.width - 20:
            x, y = 20.0, y + LEGEND_ROW
        color = colors[id(trace)]
        if trace.get("type") == "bar":
            mark = f"<rect x='{x:.0f}' y='{y - 9:.0f}' width='22' height='10' fill='{color}'/>"
        elif "lines" not in trace.get("mode", "lines"):
            mark = f"<circle cx='{x + 11:.0f}' cy='{y - 4:.0f}' r='3.5' fill='{color}'/>"
        else:
            dash = (trace.get("line") or {}).get("dash")
            mark = (f"<line x1='{x:.0f}' x2='{x + 22:.0f}' y1='{y - 4:.0f}' y2='{y - 4:.0f}' stroke='{color}' "
                    f"stroke-width='2'{_dasharray(dash)}/>")
        out.append(f"{mark}<text x='{x + 28:.0f}' y='{y:.0f}'>{esc(name)}</text>")
        x += w
    return out


def _dasharray(dash: str | None) -> str:
    return {"dot": " stroke-dasharray='2,3'", "dash": " stroke-dasharray='6,4'"}.get(dash or "", "")


def render(fig: Any, width: int | None = None, height: int | None = None) -> str:
    """The figure as an ``<svg>`` string (scales to its container's width)."""
    d = figure_dict(fig)
    traces = [t for t in d["data"] if t.get("visible", True) is not False]
    layout = d["layout"]
    canvas = Canvas(layout, traces, width, height)
    axes = build_axes(layout, traces, canvas)
    parts: list[str] = []
    for ref, axis in axes.items():
        if ref[0] == "y":
            x_ref = axis.options.get("anchor") if str(axis.options.get("anchor", "")).startswith("x") else "x" + ref[1:]
            if x_ref in axes and any(t.get("yaxis", "y") == ref for t in traces):
                parts += draw_axis(axis, axes[x_ref]) + draw_axis(axes[x_ref], axis)
    for axis in axes.values():  # room under the plot for slanted category labels
        if axis.name[0] == "x" and axis.kind == "category" and (axis.ticks() and axis.rotate):
            canvas.height += int(max(0, axis.slanted_px + 30 - canvas.bottom))
    colors = {id(t): trace_color(t, i) for i, t in enumerate(traces)}
    bars = [t for t in traces if t.get("type") == "bar"]
    for t in traces:
        x_axis, y_axis = axes[t.get("xaxis", "x")], axes[t.get("yaxis", "y")]
        kind = t.get("type", "scatter")
        if kind == "heatmap":
            parts += heatmap_marks(t, x_axis, y_axis, canvas)
        elif kind == "bar":
            group = [b for b in bars if b.get("xaxis", "x") == t.get("xaxis", "x")]
            overlay = layout.get("barmode") == "overlay" or t.get("width") is not None
            parts += bar_marks(t, x_axis, y_axis, colors[id(t)], 0 if overlay else group.index(t),
                               1 if overlay else len(group))
        else:
            parts += scatter_marks(t, x_axis, y_axis, colors[id(t)])
    parts += draw_annotations(layout, canvas) + draw_legend(canvas, colors)
    title = text_of(layout.get("title"))
    if title:
        size = 14 if len(title) * 7.5 < canvas.width - 20 else max(10, int((canvas.width - 20) / len(title) * 1.9))
        parts.append(f"<text x='12' y='22' font-size='{size}' font-weight='bold'>{esc(title)}</text>")
    h = canvas.height + canvas.legend_height
    return (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {canvas.width} {h}' width='{canvas.width}' "
            f"height='{h}' style='max-width:100%;height:auto' {FONT} font-size='11' fill='#333'>"
            f"<rect width='100%' height='100%' fill='white'/>{''.join(parts)}</svg>")


__all__ = ["COLORS", "numbers", "render"]
