"""SVG marks of one trace: scatter lines and markers, bars, heatmaps (with hover text as ``<title>``)."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np

from .axes import Axis, format_number, nice_ticks, numbers
from .png import heatmap_data_uri, palette

MARKER_PATHS = {"star": "M0,-6L1.8,-2.2L6,-1.9L2.8,1L3.7,5.3L0,3L-3.7,5.3L-2.8,1L-6,-1.9L-1.8,-2.2Z",
                "diamond": "M0,-5L5,0L0,5L-5,0Z"}  # plotly marker symbols beside the circle, drawn 10 px wide
MAX_TITLED = 600  # marks that carry their own hover text at most (per trace)
MAX_TITLED_CELLS = 256  # heatmap cells likewise (a norm map's layers × module types; not a 64 × 64 matrix)


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Any, spec: str) -> str:
    if spec and isinstance(value, (int, float, np.number)) and value is not None:
        try:
            return format(float(value), spec.replace("~", ""))
        except ValueError:
            pass
    if isinstance(value, (float, np.floating)):
        return format_number(float(value), 0.0)
    return str(value)


def hover_text(trace: dict, point: dict) -> str:
    """A point's hover text from the trace's ``hovertemplate`` (``%{x}``, ``%{y:.3f}``, ``%{customdata}``)."""
    template = trace.get("hovertemplate")
    if not template:
        name = trace.get("name")
        xy = ", ".join(_fmt(point[k], "") for k in ("x", "y", "z") if k in point)
        return f"{name}: {xy}" if name else xy
    template = re.sub(r"<extra>.*?</extra>", "", template).replace("<br>", "\n")

    def field(m: re.Match) -> str:
        return _fmt(point.get(m.group(1), ""), m.group(2) or "")

    return re.sub(r"<[^>]+>", "", re.sub(r"%\{(\w+)(?::([^}]*))?\}", field, template))


def _path(px: np.ndarray, py: np.ndarray) -> str:
    """Polyline through finite points as a compact relative path in whole pixels (``None`` values break it)."""
    ok = np.isfinite(px) & np.isfinite(py)
    parts = []
    for run in np.split(np.arange(len(px)), np.flatnonzero(np.diff(ok.astype(np.int8)) != 0) + 1):
        if not run.size or not ok[run[0]]:
            continue
        x, y = np.round(px[run]).astype(np.int64), np.round(py[run]).astype(np.int64)
        keep = np.concatenate([[True], (np.diff(x) != 0) | (np.diff(y) != 0)])
        keep[-1] = True
        x, y = x[keep], y[keep]
        steps = np.stack([np.diff(x), np.diff(y)], axis=1).ravel().tolist()
        parts.append(f"M{x[0]} {y[0]}l" + (" ".join(map(str, steps)) if steps else "0 0"))
    return "".join(parts)


def thin(xs: np.ndarray, ys: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``count`` points: every k-th plus the last."""
    if len(xs) <= count:
        return xs, ys
    idx = np.arange(0, len(xs), -(-len(xs) // count))
    if idx[-1] != len(xs) - 1:
        idx = np.append(idx, len(xs) - 1)
    return xs[idx], ys[idx]


def scatter_marks(trace: dict, x_axis: Axis, y_axis: Axis, color: str) -> list[str]:
    x, y = trace.get("x"), trace.get("y")
    if x is None or y is None or not len(y):
        return []
    px, py = x_axis.px(x), y_axis.px(y)
    mode = trace.get("mode", "lines")
    line = trace.get("line") or {}
    name = _esc(trace.get("name") or "")
    out = []
    if "lines" in mode:
        tx, ty = thin(px, py, int(abs(x_axis.p1 - x_axis.p0)) + 2)
        dash = {"dot": " stroke-dasharray='2,3'", "dash": " stroke-dasharray='6,4'"}.get(line.get("dash", ""), "")
        points = int(np.sum(np.isfinite(px) & np.isfinite(py)))  # the data's count, before thinning to pixels
        out.append(f"<path d='{_path(tx, ty)}' fill='none' stroke='{color}' stroke-width='{line.get('width', 2)}' "
                   f"stroke-linejoin='round' data-points='{points}'{dash}><title>{name}</title></path>")
    if "markers" in mode:
        titled = len(px) <= MAX_TITLED
        xs, ys = list(x), list(y)
        marker = trace.get("marker") or {}
        symbol, size = marker.get("symbol"), float(marker.get("size") or 7)
        shape = MARKER_PATHS.get(symbol)
        for i, (a, b) in enumerate(zip(px, py)):
            if np.isfinite(a) and np.isfinite(b):
                tip = f"<title>{_esc(hover_text(trace, {'x': xs[i], 'y': ys[i]}))}</title>" if titled else ""
                if shape:
                    out.append(f"<path transform='translate({a:.1f},{b:.1f}) scale({size / 10:.2f})' d='{shape}' "
                               f"fill='{color}' stroke='#333' stroke-width='1'>{tip}</path>")
                else:
                    out.append(f"<circle cx='{a:.1f}' cy='{b:.1f}' r='{size / 2:.1f}' fill='{color}'>{tip}</circle>")
    return out


def bar_marks(trace: dict, x_axis: Axis, y_axis: Axis, color: str, slot: int, slots: int) -> list[str]:
    """Bars (vertical; ``orientation="h"``: horizontal), grouped in ``slots``; ``marker.line`` outlines (per bar
    where it is a list) mark chosen bars."""
    horizontal = trace.get("orientation") == "h"
    cats, values = ("y", "x") if horizontal else ("x", "y")
    along, across = (y_axis, x_axis) if horizontal else (x_axis, y_axis)
    c, v = trace.get(cats), numbers(trace.get(values))
    if c is None or not len(v):
        return []
    pos = along.positions(c)
    width = trace.get("width")
    if np.isscalar(width):
        each, offsets = float(width), 0.0
    else:
        spacing = float(np.nanmin(np.abs(np.diff(pos)))) if len(pos) > 1 else 1.0
        each = 0.8 * spacing / slots
        offsets = -0.4 * spacing + (slot + 0.5) * each
    side0, side1 = along.to_px(pos + offsets - each / 2), along.to_px(pos + offsets + each / 2)
    top = across.px(v)
    base = across.to_px(np.zeros(len(v)) if across.kind == "linear" else np.full(len(v), across.lo))
    opacity = trace.get("opacity")
    fill = f" fill='{color}'" + (f" fill-opacity='{opacity}'" if opacity is not None else "")
    custom = trace.get("customdata")
    line = (trace.get("marker") or {}).get("line") or {}
    widths = line.get("width") if isinstance(line.get("width"), (list, tuple)) else [line.get("width")] * len(v)
    cs, out = list(c), [f"<g{fill}>"]
    for i in range(len(v)):
        if not (np.isfinite(top[i]) and np.isfinite(side0[i])):
            continue
        a0, a1 = sorted((float(side0[i]), float(side1[i])))
        b0, b1 = sorted((float(top[i]), float(base[i])))
        x0, x1, y0, y1 = (b0, b1, a0, a1) if horizontal else (a0, a1, b0, b1)
        point = {cats: cs[i], values: float(v[i]), **({"customdata": custom[i]} if custom is not None else {})}
        tip = f"<title>{_esc(hover_text(trace, point))}</title>" if len(v) <= MAX_TITLED else ""
        stroke = (f" stroke='{line.get('color') or '#222'}' stroke-width='{widths[i]}'"
                  if widths[i] else "")
        out.append(f"<rect x='{x0:.1f}' y='{y0:.1f}' width='{max(x1 - x0, 0.5):.1f}' "
                   f"height='{max(y1 - y0, 0.5):.1f}'{stroke}>{tip}</rect>")
    return out + ["</g>"]


def z_range(trace: dict, z: np.ndarray) -> tuple[float, float]:
    finite = z[np.isfinite(z)]
    lo = trace.get("zmin") if trace.get("zmin") is not None else (float(finite.min()) if finite.size else 0.0)
    hi = trace.get("zmax") if trace.get("zmax") is not None else (float(finite.max()) if finite.size else 1.0)
    if trace.get("zmid") is not None and (trace.get("zmin") is None or trace.get("zmax") is None):
        bound = max(abs(lo - trace["zmid"]), abs(hi - trace["zmid"])) or 1.0
        lo, hi = trace["zmid"] - bound, trace["zmid"] + bound
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def heatmap_marks(trace: dict, x_axis: Axis, y_axis: Axis, canvas: Any) -> list[str]:
    raw = trace.get("z")
    z = np.array([numbers(row) for row in (raw if raw is not None else [])], dtype=float)
    if z.ndim != 2 or not z.size:
        return []
    rows, cols = z.shape
    xs = trace.get("x") if trace.get("x") is not None else list(range(cols))
    ys = trace.get("y") if trace.get("y") is not None else list(range(rows))
    cx, cy = x_axis.positions(xs), y_axis.positions(ys)
    dx = float(np.nanmin(np.diff(cx))) if cols > 1 else 1.0
    dy = float(np.nanmin(np.diff(cy))) if rows > 1 else 1.0
    xa, xb = x_axis.to_px([cx[0] - dx / 2, cx[-1] + dx / 2])
    ya, yb = y_axis.to_px([cy[0] - dy / 2, cy[-1] + dy / 2])
    image = z[::-1] if ya > yb else z  # PNG row 0 is the top row on screen
    image = image[:, ::-1] if xa > xb else image
    lo, hi = z_range(trace, z)
    uri = heatmap_data_uri(image, trace.get("colorscale"), lo, hi, bool(trace.get("reversescale")))
    x0, y0 = min(xa, xb), min(ya, yb)
    w, h = abs(xb - xa), abs(yb - ya)
    out = [f"<image x='{x0:.1f}' y='{y0:.1f}' width='{w:.1f}' height='{h:.1f}' preserveAspectRatio='none' "
           f"style='image-rendering:pixelated' href='{uri}'/>"]
    if rows * cols <= MAX_TITLED_CELLS:
        out += _cell_titles(trace, z, xs, ys, x_axis, y_axis, (dx, dy))
    if trace.get("showscale", True) is not False:
        out += colorbar(trace, lo, hi, canvas)
    return out


def _cell_titles(trace, z, xs, ys, x_axis, y_axis, steps) -> list[str]:
    """A transparent rectangle with hover text over each cell of a small heatmap."""
    custom = trace.get("customdata")
    cx, cy = x_axis.positions(xs), y_axis.positions(ys)
    x0, x1 = x_axis.to_px(cx - steps[0] / 2), x_axis.to_px(cx + steps[0] / 2)
    y0, y1 = y_axis.to_px(cy - steps[1] / 2), y_axis.to_px(cy + steps[1] / 2)
    left, width = np.minimum(x0, x1), np.abs(x1 - x0)
    top, height = np.minimum(y0, y1), np.abs(y1 - y0)
    xs, ys = list(xs), list(ys)
    out = ["<g fill='transparent'>"]
    for i, j in zip(*np.nonzero(np.isfinite(z))):
        point = {"x": xs[j], "y": ys[i], "z": float(z[i, j]),
                 **({"customdata": custom[i][j]} if custom is not None else {})}
        out.append(f"<rect x='{left[j]:.1f}' y='{top[i]:.1f}' width='{width[j]:.1f}' height='{height[i]:.1f}'>"
                   f"<title>{_esc(hover_text(trace, point))}</title></rect>")
    return out + ["</g>"]


def colorbar(trace: dict, lo: float, hi: float, canvas: Any) -> list[str]:
    """A vertical colour gradient right of the plot, with nice ticks (whole numbers for whole-number data) and its
    title above it."""
    reverse = bool(trace.get("reversescale"))
    colors = palette(trace.get("colorscale"), 9, reverse)
    gid = f"cb{abs(hash((lo, hi, str(trace.get('colorscale')), reverse))) % 10**8}"
    stops = "".join(f"<stop offset='{i / 8:.3f}' stop-color='rgb({r},{g},{b})'/>" for i, (r, g, b) in
                    enumerate(colors.tolist()))
    x, y0, y1 = canvas.x1 + 18, canvas.y0, canvas.y1
    title = (trace.get("colorbar") or {}).get("title")
    title = title.get("text") if isinstance(title, dict) else title
    out = [f"<defs><linearGradient id='{gid}' x1='0' y1='1' x2='0' y2='0'>{stops}</linearGradient></defs>",
           f"<rect x='{x}' y='{y0:.1f}' width='14' height='{y1 - y0:.1f}' fill='url(#{gid})'/>"]
    raw = numbers(np.ravel(np.asarray(trace.get("z"), dtype=object)) if trace.get("z") is not None else [])
    finite = raw[np.isfinite(raw)]
    whole = bool(finite.size) and bool(np.all(finite == np.round(finite)))
    count = max(4, min(8, int((y1 - y0) // 40)))
    values, step = nice_ticks(lo, hi, count, integer=whole)
    for value in values:
        y = y1 - (value - lo) / ((hi - lo) or 1.0) * (y1 - y0)
        out.append(f"<line x1='{x + 9}' x2='{x + 14}' y1='{y:.1f}' y2='{y:.1f}' stroke='white'/>"  # inside the bar
                   + canvas.text(format_number(value, step), x + 18, y + 4))
    if title:
        out.append(canvas.text(str(title), x + 7, y0 - 12, "middle"))
    return out
