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
import math
import re
from typing import Any, NamedTuple

import numpy as np

from .axes import CHAR_PX, Axis, is_category, numbers, text_px
from .marks import MARKER_PATHS, bar_marks, heatmap_marks, scatter_marks

COLORS = ("#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880", "#FF97FF",
          "#FECB52")
FONT = "font-family='Helvetica,Arial,sans-serif'"
LEGEND_ROW = 20
COLORBAR = 80
WIDTH = 960  # default canvas width: about a JupyterLab output's width (the SVG scales to its container)


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


class Label(NamedTuple):
    """A text the renderer drew and the box it takes (SVG user units, about: from the characters' count)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    angle: float = 0.0  # degrees: slanted labels are compared in their own frame
    x: float = 0.0  # the anchor point (the baseline's start, middle or end)
    y: float = 0.0
    left: float = 0.0  # where the text starts from the anchor, before rotating; its width and height
    w: float = 0.0
    h: float = 0.0


def label_box(text: str, x: float, y: float, anchor: str = "start", size: float = 11, angle: float = 0) -> Label:
    """The box of ``text`` drawn with its baseline at ``(x, y)`` (``angle``: degrees, counter-clockwise negative)."""
    w, h = CHAR_PX * size / 11 * len(text), 0.8 * size
    left = {"start": 0.0, "middle": -w / 2, "end": -w}[anchor]
    corners = [(left, 0.0), (left + w, 0.0), (left, -h), (left + w, -h)]
    a = math.radians(angle)
    xs = [x + cx * math.cos(a) - cy * math.sin(a) for cx, cy in corners]
    ys = [y + cx * math.sin(a) + cy * math.cos(a) for cx, cy in corners]
    return Label(text, min(xs), min(ys), max(xs), max(ys) + 0.25 * size, angle, x, y, left, w, h)  # + descenders


def overlapping(labels: list[Label], tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes overlap by more than ``tolerance`` both ways (labels slanted at the same angle
    are compared in their own frame, where parallel lines of text do not touch)."""
    out = []
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if a.angle and a.angle == b.angle:
                t = math.radians(-a.angle)  # both anchors in the labels' own frame
                u = [(p.x * math.cos(t) - p.y * math.sin(t) + p.left, p.x * math.sin(t) + p.y * math.cos(t))
                     for p in (a, b)]
                boxes = [(ux, uy - p.h, ux + p.w, uy) for (ux, uy), p in zip(u, (a, b))]
            else:
                boxes = [(a.x0, a.y0, a.x1, a.y1), (b.x0, b.y0, b.x1, b.y1)]
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes
            if min(ax1, bx1) - max(ax0, bx0) > tolerance and min(ay1, by1) - max(ay0, by0) > tolerance:
                out.append((a.text, b.text))
    return out


def outside(labels: list[Label], width: float, height: float, tolerance: float = 0.5) -> list[str]:
    """Labels that stick out of a ``width`` × ``height`` picture (would be clipped)."""
    return [lb.text for lb in labels if lb.x0 < -tolerance or lb.y0 < -tolerance or lb.x1 > width + tolerance
            or lb.y1 > height + tolerance]


def svg_text(labels: list, text: str, x: float, y: float, anchor: str = "start", size: float = 11,
             angle: float = 0, more: str = "") -> str:
    """A ``<text>`` element; its box goes into ``labels``."""
    labels.append(label_box(text, x, y, anchor, size, angle))
    place = (f"transform='translate({x:.1f},{y:.1f}) rotate({angle:g})'" if angle else f"x='{x:.1f}' y='{y:.1f}'")
    anchor_attr = f" text-anchor='{anchor}'" if anchor != "start" else ""
    size_attr = f" font-size='{size:g}'" if size != 11 else ""
    return f"<text {place}{anchor_attr}{size_attr}{more}>{esc(text)}</text>"


def axis_key(ref: str) -> str:
    """``"x2"`` → ``"xaxis2"``."""
    return ref[0] + "axis" + ref[1:]


class Canvas:
    """Layout of one figure: canvas size, plot area, legend entries and the labels drawn so far."""

    def __init__(self, layout: dict, traces: list[dict], width: int | None, height: int | None) -> None:
        self.width = int(width or layout.get("width") or WIDTH)
        self.height = int(height or layout.get("height") or 400)
        self.labels: list[Label] = []  # every text drawn, with its box
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
        self.legend_above = float((layout.get("legend") or {}).get("y", -1)) >= 1  # rows under the title
        self.legend_top = 34 if title else 8
        rows = len(legend_rows(self.legend, self.width, self.left if self.legend_above else 20))
        self.legend_height = rows * LEGEND_ROW + 6 if self.legend else 0
        if self.legend_above and self.legend:
            top = max(self.top, self.legend_top + rows * LEGEND_ROW + 22)  # + room for the panels' titles
            self.height += top - self.top
            self.top = top
        self.x0, self.x1 = self.left, self.width - self.right
        self.y0, self.y1 = self.top, self.height - self.bottom

    def text(self, text: str, x: float, y: float, anchor: str = "start", size: float = 11, angle: float = 0,
             more: str = "") -> str:
        return svg_text(self.labels, text, x, y, anchor, size, angle, more)


def legend_rows(legend: list[tuple[str, dict]], width: int, left: float = 20) -> list[list[tuple[float, str, dict]]]:
    """Legend entries flowed into rows from ``left``: ``(x, name, trace)``."""
    rows: list[list[tuple[float, str, dict]]] = [[]]
    x = float(left)
    for name, trace in legend:
        w = 40 + CHAR_PX * len(name)
        if rows[-1] and x + w > width - 20:
            rows.append([])
            x = float(left)
        rows[-1].append((x, name, trace))
        x += w
    return rows if legend else []


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
        along = "y" if t.get("orientation") == "h" else "x"  # a bar chart's category axis
        if kind == "heatmap" or (kind == "bar" and letter == along):
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
    zero = zero or axis.options.get("rangemode") == "tozero"
    pad = 0.0 if axis.kind == "category" else pad  # category slots already leave half a slot at each end
    axis.fit(np.concatenate(coords), pad, include_zero=zero and axis.kind == "linear")
    if axis.integer and axis.hi - axis.lo < 3 and axis.options.get("range") is None:  # room for 4 whole ticks
        axis.lo, axis.hi = (axis.lo, axis.lo + 3.0) if zero else (axis.lo - 0.5, axis.lo + 3.5)


def draw_axis(axis: Axis, other: Axis, canvas: Canvas) -> list[str]:
    """Grid lines, tick labels and the title of ``axis``; ``other`` is the axis it crosses."""
    out, title = [], text_of(axis.options.get("title") or {})
    lo, hi = sorted((other.p0, other.p1))
    ticks = axis.ticks()
    for i, (coord, label) in enumerate(ticks):
        p = float(axis.to_px(coord))
        if axis.name[0] == "x" and axis.rotate:
            out.append(canvas.text(label, p + 3, hi + 10, "end", angle=-35))
        elif axis.name[0] == "x":
            out.append(f"<line x1='{p:.1f}' x2='{p:.1f}' y1='{lo:.1f}' y2='{hi:.1f}' stroke='#eee'/>"
                       + canvas.text(label, p, hi + 14 + (13 if axis.stagger and i % 2 else 0), "middle"))
        else:
            out.append(f"<line x1='{lo:.1f}' x2='{hi:.1f}' y1='{p:.1f}' y2='{p:.1f}' stroke='#eee'/>"
                       + canvas.text(label, lo - 4, p + 4, "end"))
    if title and axis.name[0] == "x":
        below = hi + (axis.slanted_px + 16 if axis.rotate else 45 if axis.stagger else 32)
        out.append(canvas.text(title, (axis.p0 + axis.p1) / 2, below, "middle"))
    elif title:
        widest = text_px(label for _, label in ticks)
        x, y = lo - max(30, widest + 12), (axis.p0 + axis.p1) / 2
        out.append(canvas.text(title, x, y, "middle", angle=-90))
    box = (f"<rect x='{lo:.1f}' y='{min(axis.p0, axis.p1):.1f}' width='{hi - lo:.1f}' "
           f"height='{abs(axis.p1 - axis.p0):.1f}' fill='none' stroke='#bbb'/>") if axis.name[0] == "y" else ""
    return [box, *out]


def y_label_room(axis: Axis) -> float:
    """Pixels left of a y axis its tick labels and title need."""
    widest = text_px(label for _, label in axis.ticks())
    return widest + 12 + (16 if text_of(axis.options.get("title") or {}) else 0)


def draw_annotations(layout: dict, canvas: Canvas) -> list[str]:
    """Annotations at paper coordinates (subplot titles and notes)."""
    out = []
    for a in layout.get("annotations") or ():
        x = canvas.x0 + float(a.get("x", 0.5)) * (canvas.x1 - canvas.x0)
        y = canvas.y1 - float(a.get("y", 1.0)) * (canvas.y1 - canvas.y0)
        y += {"bottom": -5, "top": 12, "middle": 4}.get(a.get("yanchor", "middle"), 4)
        anchor = {"left": "start", "right": "end"}.get(a.get("xanchor", "center"), "middle")
        out.append(canvas.text(text_of(a.get("text")), x, y, anchor, size=12))
    return out


def marker_mark(x: float, y: float, color: str, symbol: str | None, size: float = 7) -> str:
    """A legend or plot marker: a circle, or the star / diamond plotly's ``marker.symbol`` names."""
    if symbol in MARKER_PATHS:
        return (f"<path transform='translate({x:.1f},{y:.1f}) scale({size / 10:.2f})' d='{MARKER_PATHS[symbol]}' "
                f"fill='{color}' stroke='#333' stroke-width='1'/>")
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{size / 2:.1f}' fill='{color}'/>"


def draw_legend(canvas: Canvas, colors: dict[int, str]) -> list[str]:
    """Legend rows under the plots, or over them (``legend.y >= 1``, e.g. beside the panel the curves are in)."""
    out = []
    first = canvas.legend_top + 14 if canvas.legend_above else canvas.height + 14
    for row, entries in enumerate(legend_rows(canvas.legend, canvas.width, canvas.x0 if canvas.legend_above else 20)):
        y = first + row * LEGEND_ROW
        for x, name, trace in entries:
            color = colors[id(trace)]
            marker = trace.get("marker") or {}
            if trace.get("type") == "bar":
                mark = f"<rect x='{x:.0f}' y='{y - 9:.0f}' width='22' height='10' fill='{color}'/>"
            elif "lines" not in trace.get("mode", "lines"):
                mark = marker_mark(x + 11, y - 4, color, marker.get("symbol"), 9 if marker.get("symbol") else 7)
            else:
                dash = (trace.get("line") or {}).get("dash")
                mark = (f"<line x1='{x:.0f}' x2='{x + 22:.0f}' y1='{y - 4:.0f}' y2='{y - 4:.0f}' stroke='{color}' "
                        f"stroke-width='2'{_dasharray(dash)}/>")
                if "markers" in trace.get("mode", ""):
                    mark += marker_mark(x + 11, y - 4, color, marker.get("symbol"))
            out.append(mark + canvas.text(name, x + 28, y))
    return out


def _dasharray(dash: str | None) -> str:
    return {"dot": " stroke-dasharray='2,3'", "dash": " stroke-dasharray='6,4'"}.get(dash or "", "")


def alt_text(layout: dict, traces: list[dict]) -> str:
    """What the chart shows, in words (its alternative text): the title, the axes, the series."""
    meta = layout.get("meta")
    if isinstance(meta, dict) and meta.get("alt"):
        return str(meta["alt"])
    parts = [text_of(layout.get("title")) or "chart"]
    x, y = (text_of((layout.get(k) or {}).get("title") or {}) for k in ("xaxis", "yaxis"))
    if x or y:
        parts.append(f"{y or 'value'} against {x or 'category'}")
    names = [str(t["name"]) for t in traces if t.get("name")]
    bars = [text_of((t.get("colorbar") or {}).get("title") or {}) for t in traces if t.get("type") == "heatmap"]
    if names:
        parts.append("series: " + ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else ""))
    if any(bars):
        parts.append("colour: " + ", ".join(b for b in bars if b))
    return "; ".join(parts)


def layout_axes(layout: dict, traces: list[dict], canvas: Canvas) -> dict[str, Axis]:
    """The axes, with the left margin widened until the tick labels and title of each leftmost y axis fit."""
    axes = build_axes(layout, traces, canvas)
    leftmost = [a for r, a in axes.items() if r[0] == "y" and
                float((axes.get("x" + r[1:]) or axes["x"]).options.get("domain", (0.0, 1.0))[0]) == 0.0]
    need = max((y_label_room(a) for a in leftmost), default=0.0)
    if need > canvas.left:
        canvas.left = canvas.x0 = int(min(need + 2, 0.45 * canvas.width))
        axes = build_axes(layout, traces, canvas)
    return axes


def render(fig: Any, width: int | None = None, height: int | None = None) -> str:
    """The figure as an ``<svg>`` string (scales to its container's width)."""
    return render_labels(fig, width, height)[0]


def render_labels(fig: Any, width: int | None = None, height: int | None = None) -> tuple[str, list[Label]]:
    """``(svg, labels)``: the figure as an ``<svg>`` string and the box of every text it draws (what tests read to
    find labels that overlap or fall outside the picture)."""
    d = figure_dict(fig)
    traces = [t for t in d["data"] if t.get("visible", True) is not False]
    layout = d["layout"]
    canvas = Canvas(layout, traces, width, height)
    axes = layout_axes(layout, traces, canvas)
    parts: list[str] = []
    for ref, axis in axes.items():
        if ref[0] == "y":
            x_ref = axis.options.get("anchor") if str(axis.options.get("anchor", "")).startswith("x") else "x" + ref[1:]
            if x_ref in axes and any(t.get("yaxis", "y") == ref for t in traces):
                parts += draw_axis(axis, axes[x_ref], canvas) + draw_axis(axes[x_ref], axis, canvas)
    for axis in axes.values():  # room under the plot for slanted or two-line category labels
        if axis.name[0] == "x" and axis.kind == "category" and axis.ticks() and (axis.rotate or axis.stagger):
            canvas.height += int(max(0, (axis.slanted_px + 30 if axis.rotate else 56) - canvas.bottom))
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
        size = 14 if len(title) * 7.8 < canvas.width - 24 else max(9, int((canvas.width - 24) / len(title) * 1.8))
        parts.append(canvas.text(title, 12, 22, size=size, more=" font-weight='bold'"))
    h = canvas.height + (0 if canvas.legend_above else canvas.legend_height)
    alt = esc(alt_text(layout, traces))
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {canvas.width} {h}' width='{canvas.width}' "
           f"height='{h}' role='img' aria-label='{alt}' style='width:100%;max-width:{int(canvas.width * 1.25)}px;"
           f"height:auto' {FONT} font-size='11' fill='#333'><title>{alt}</title>"
           f"<rect width='100%' height='100%' fill='white'/>{''.join(parts)}</svg>")
    return svg, canvas.labels


__all__ = ["COLORS", "Label", "numbers", "outside", "overlapping", "render", "render_labels"]
