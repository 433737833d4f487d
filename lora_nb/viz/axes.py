"""Axes of an SVG chart: data ranges, linear / log / category scales, and readable ticks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def numbers(values) -> np.ndarray:
    """Values as a float array (``None`` and non-numbers become NaN)."""
    if values is None:
        return np.zeros(0)
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(float, copy=False).ravel()
    try:
        return np.asarray(values, dtype=float).ravel()  # None → NaN
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = float(v) if v is not None else np.nan
        except (TypeError, ValueError):
            out[i] = np.nan
    return out


def is_category(values) -> bool:
    return values is not None and any(isinstance(v, str) for v in list(values)[:50])


def format_number(v: float, step: float = 0.0, fmt: str | None = None) -> str:
    """A tick label: integers plainly, k/M suffixes for large values, 3 significant digits otherwise."""
    if fmt == ".0%":
        return f"{v * 100:.0f}%"
    if fmt == "d" or (step >= 1 and float(v).is_integer() and abs(v) < 1e4):
        return f"{int(round(v))}"
    a = abs(v)
    if a >= 1e4:
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                return f"{v / div:.3g}{suffix}"
    if v == 0:
        return "0"
    digits = max(1, min(6, -math.floor(math.log10(step)) if step > 0 else 3))
    text = f"{v:.{digits}f}".rstrip("0").rstrip(".") if a >= 1e-3 else f"{v:.2g}"
    return text


def nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


CHAR_PX = 6.5  # about how wide one character of a tick label is drawn (11 px sans-serif)


def text_px(labels) -> float:
    """About how wide the longest of ``labels`` is drawn."""
    return CHAR_PX * max((len(str(label)) for label in labels), default=0)


@dataclass
class Axis:
    """One axis: its pixel span (``p0`` ↔ low value, ``p1`` ↔ high value), scale and ticks."""

    name: str
    p0: float
    p1: float
    kind: str = "linear"  # linear | log | category
    reversed: bool = False
    categories: list = field(default_factory=list)
    lo: float = 0.0
    hi: float = 1.0
    options: dict = field(default_factory=dict)
    integer: bool = False  # every data value is a whole number: ticks too
    rotate: bool = False  # category labels too long for their slots are drawn slanted

    @property
    def label_px(self) -> float:
        """Width of the longest category label (0 on a numeric axis)."""
        return text_px(self.categories) if self.kind == "category" else 0.0

    @property
    def slanted_px(self) -> float:
        """Height the slanted category labels take under an x axis (drawn at -35°)."""
        return 0.6 * self.label_px + 12

    def category_index(self, values) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.categories)}
        return np.array([index.get(str(v), np.nan) if v is not None else np.nan for v in values], dtype=float)

    def positions(self, values) -> np.ndarray:
        """Data values → the axis's linear coordinate (log10 on a log axis, index on a category axis)."""
        if self.kind == "category":
            return self.category_index(values)
        v = numbers(values)
        if self.kind == "log":
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
        return v

    def to_px(self, coords: np.ndarray) -> np.ndarray:
        """Axis coordinates → pixels."""
        span = self.hi - self.lo if self.hi != self.lo else 1.0
        t = (np.asarray(coords, dtype=float) - self.lo) / span
        if self.reversed:
            t = 1.0 - t
        return self.p0 + t * (self.p1 - self.p0)

    def px(self, values) -> np.ndarray:
        return self.to_px(self.positions(values))

    def fit(self, coords: np.ndarray, pad: float, include_zero: bool = False) -> None:
        """Set the range to the finite ``coords`` (plus ``pad`` of the span on each side)."""
        c = coords[np.isfinite(coords)]
        if include_zero:
            c = np.append(c, 0.0)
        if not c.size:
            self.lo, self.hi = (0.0, 1.0) if self.kind != "category" else (-0.5, 0.5)
            return
        lo, hi = float(c.min()), float(c.max())
        if hi == lo:
            lo, hi = lo - (0.5 if self.kind != "linear" or lo == 0 else abs(lo) * 0.1), \
                hi + (0.5 if self.kind != "linear" or hi == 0 else abs(hi) * 0.1)
        span = hi - lo
        self.lo = lo if (include_zero and lo == 0) else lo - pad * span
        self.hi = hi if (include_zero and hi == 0) else hi + pad * span

    def ticks(self) -> list[tuple[float, str]]:
        """``(axis coordinate, label)`` of each tick."""
        opts = self.options
        if opts.get("tickvals") is not None:
            vals = list(opts["tickvals"])
            return [(float(c), format_number(v, 1.0, opts.get("tickformat")))
                    for c, v in zip(self.positions(vals), vals) if np.isfinite(c)]
        if self.kind == "category":
            span, n, width = abs(self.p1 - self.p0), max(1, len(self.categories)), self.label_px
            # a label needs a line (14 px) on a y axis; on an x axis its width, up to 6 characters; longer ones are
            # drawn slanted, one above the other, and need about a line and a half along the axis
            room = 14.0 if self.name[0] != "x" else max(14.0, width + 8) if width <= 6 * CHAR_PX else 20.0
            every = max(1, math.ceil(n / max(2, span // room)))
            self.rotate = self.name[0] == "x" and width > span / n * every
            return [(float(i), str(c)) for i, c in enumerate(self.categories) if i % every == 0]
        if self.kind == "log":
            return self._log_ticks()
        count = max(2, min(8, int(abs(self.p1 - self.p0) // 60)))
        step = nice_step(self.hi - self.lo, count)
        if opts.get("dtick") and (self.hi - self.lo) / float(opts["dtick"]) <= 20:
            step = float(opts["dtick"])
        if opts.get("tickformat") == "d" or self.integer:
            step = max(1.0, round(step))
        first = math.ceil(self.lo / step - 1e-9)
        values = [k * step for k in range(first, int(math.floor(self.hi / step + 1e-9)) + 1)]
        return [(v, format_number(v, step, opts.get("tickformat"))) for v in values]

    def _log_ticks(self) -> list[tuple[float, str]]:
        lo, hi = math.floor(self.lo), math.ceil(self.hi)
        mults = (1, 2, 5) if hi - lo <= 2 else (1,)
        out = []
        for e in range(lo, hi + 1):
            for m in mults:
                c = e + math.log10(m)
                if self.lo - 1e-9 <= c <= self.hi + 1e-9:
                    out.append((c, format_number(m * 10.0 ** e, m * 10.0 ** e)))
        return out
