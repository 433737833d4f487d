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


def decimals(step: float) -> int:
    """Decimal places that tell ticks ``step`` apart (2.5e-3 → 4, 0.2 → 1, 5 → 0)."""
    if step <= 0 or not math.isfinite(step):
        return 3
    e = math.floor(math.log10(step) + 1e-9)
    mantissa = step / 10 ** e
    return max(0, -e + (0 if abs(mantissa - round(mantissa)) < 1e-6 else 1))


def format_number(v: float, step: float = 0.0, fmt: str | None = None) -> str:
    """A tick label precise enough to tell ticks ``step`` apart: integers plainly, k/M/G suffixes for large values,
    ``9.92e-4`` where plain decimals would need more than 4 places (0 without a step: 3 significant digits)."""
    if fmt == ".0%":
        return f"{v * 100:.0f}%"
    if fmt == "d" or (step >= 1 and float(v).is_integer() and abs(v) < 1e4):
        return f"{int(round(v))}"
    a = abs(v)
    if v == 0:
        return "0"
    if a >= 1e4:
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                digits = decimals(step / div) if step > 0 else 2
                text = f"{v / div:.{min(digits, 3)}f}"
                return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix  # 600k, not 6k
    if step <= 0:
        return f"{v:.3g}"
    digits = decimals(step)
    if digits <= 4:
        return f"{v:.{digits}f}"
    e = math.floor(math.log10(a) + 1e-12)
    base, exp = f"{v:.{max(0, digits + e)}e}".split("e")  # as many significant digits as the step needs
    return f"{base}e{int(exp)}"


def nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def smaller_step(step: float) -> float:
    """The next nice step below ``step`` (5 → 2 → 1 → 0.5 …)."""
    mag = 10 ** math.floor(math.log10(step) + 1e-9)
    m = step / mag
    for lower in (5, 2, 1):
        if lower < m - 1e-9:
            return lower * mag
    return 0.5 * mag


def larger_step(step: float) -> float:
    """The next nice step above ``step`` (1 → 2 → 5 → 10 …)."""
    mag = 10 ** math.floor(math.log10(step) + 1e-9)
    m = step / mag
    for higher in (2, 5, 10):
        if higher > m + 1e-9:
            return higher * mag
    return 20 * mag


def grid(lo: float, hi: float, step: float) -> list[float]:
    """The multiples of ``step`` in [lo, hi]."""
    return [k * step for k in range(math.ceil(lo / step - 1e-9), int(math.floor(hi / step + 1e-9)) + 1)]


def nice_ticks(lo: float, hi: float, count: int, integer: bool = False, least: int = 4) -> tuple[list[float], float]:
    """``(values, step)``: nice ticks in [lo, hi], about ``count`` of them and at least ``least`` where the span
    allows (integer steps only on an integer axis)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [], 1.0
    step = nice_step(hi - lo, count)
    if integer:
        step = max(1.0, round(step)) if step >= 1 else 1.0
    while True:
        values = grid(lo, hi, step)
        finer = smaller_step(step)
        if len(values) >= least or (integer and finer < 1) or len(values) > 40:
            return values, step
        step = finer


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
    stagger: bool = False  # category labels too long for one line are drawn on two, every other one lower

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
            # a label needs a line (12 px) on a y axis; on an x axis its width, up to 6 characters; longer ones are
            # drawn slanted, one above the other, and need about a line and a half along the axis
            room = 12.0 if self.name[0] != "x" else max(14.0, width + 8) if width <= 6 * CHAR_PX else 20.0
            every = max(1, math.ceil(n / max(2, span // room)))
            slot = span / n * every
            # an x label wider than its slot goes on a second line every other tick, or, wider still, slanted
            self.stagger = self.name[0] == "x" and slot < width + 8 <= 2 * slot and n > 1
            self.rotate = self.name[0] == "x" and width + 8 > 2 * slot
            return [(float(i), str(c)) for i, c in enumerate(self.categories) if i % every == 0]
        if self.kind == "log":
            return self._log_ticks()
        return self._linear_ticks()

    def _linear_ticks(self) -> list[tuple[float, str]]:
        """Nice ticks, at least 4 where the span allows, as many as fit without their labels touching."""
        opts, span = self.options, abs(self.p1 - self.p0)
        integer = opts.get("tickformat") == "d" or self.integer
        x = self.name[0] == "x"
        count = max(4, min(10, int(span // (70 if x else 40))))
        if opts.get("dtick") and (self.hi - self.lo) / float(opts["dtick"]) <= 20:
            step = float(opts["dtick"])
            values = grid(self.lo, self.hi, step)
        else:
            values, step = nice_ticks(self.lo, self.hi, count, integer)
        if opts.get("rangemode") == "nonnegative":  # a count (steps): no tick below zero in the range's margin
            values = [v for v in values if v >= 0]
        while len(values) > 2:  # fewer ticks while neighbouring labels would touch
            labels = [format_number(v, step, opts.get("tickformat")) for v in values]
            room = (text_px(labels) + 8) if x else 15.0
            if span / max(1, (self.hi - self.lo) / step) >= room:
                break
            coarser = larger_step(step)  # the next nice step, its ticks on its own grid
            if len(grid(self.lo, self.hi, coarser)) < 2:
                break
            step = coarser
            values = [v for v in grid(self.lo, self.hi, step)
                      if opts.get("rangemode") != "nonnegative" or v >= 0]
        digits = decimals(step) + 2
        return [(round(v, digits), format_number(round(v, digits), step, opts.get("tickformat"))) for v in values]

    def _log_ticks(self) -> list[tuple[float, str]]:
        """Powers of ten (with 2 and 5 between them over a short span, all nine digits over one decade at most);
        under 4 of those, nice linear values drawn on the log scale."""
        lo, hi = math.floor(self.lo), math.ceil(self.hi)
        out: list[tuple[float, str]] = []
        for mults in ((1,), (1, 2, 5), tuple(range(1, 10))):
            if len(mults) == 1 and hi - lo <= 3:
                continue
            out = []
            for e in range(lo, hi + 1):
                for m in mults:
                    c = e + math.log10(m)
                    if self.lo - 1e-9 <= c <= self.hi + 1e-9:
                        out.append((c, format_number(m * 10.0 ** e, m * 10.0 ** e)))
            room = abs(self.p1 - self.p0) / max(1, len(out))
            if len(out) >= 4 or room < 15:
                break
        if len(out) < 4:
            values, step = nice_ticks(10 ** self.lo, 10 ** self.hi, 5)
            out = [(math.log10(v), format_number(v, step)) for v in values if v > 0]
        return thin_log(out, abs(self.p1 - self.p0), self.name[0] == "x")


def thin_log(ticks: list[tuple[float, str]], span: float, x: bool) -> list[tuple[float, str]]:
    """Every other tick (keeping powers of ten first) while labels on ``span`` pixels would touch."""
    while len(ticks) > 4:
        room = (text_px(label for _, label in ticks) + 8) if x else 15.0
        lo, hi = (min(c for c, _ in ticks), max(c for c, _ in ticks))
        if (hi - lo) == 0 or span * (hi - lo) / max(hi - lo, 1e-9) / len(ticks) >= room:
            break
        powers = [t for t in ticks if abs(t[0] - round(t[0])) < 1e-9]
        ticks = powers if 4 <= len(powers) < len(ticks) else ticks[::2]
    return ticks
