"""The SVG renderer itself (what saved notebooks, GitHub and every non-widget front end show): its ticks, number
formats and axis types. Properties, not exact strings — a tick placement or format may improve, but ticks stay few,
nice, evenly spaced and inside the data's range, labels stay readable back as their values and tell ticks apart,
and log and category axes stay what they say."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lora_nb.viz.axes import Axis, format_number
from lora_nb.viz.svg import render

SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9}


def value_of(label: str) -> float:
    """A tick label read back as a number (``1.5k``, ``20%``, ``2e-06``, ``-0.25``)."""
    label = label.strip().replace("−", "-")
    if label.endswith("%"):
        return float(label[:-1]) / 100
    if label[-1:] in SUFFIX:
        return float(label[:-1]) * SUFFIX[label[-1]]
    return float(label)


def linear_ticks(lo: float, hi: float, px: float = 400.0) -> list[tuple[float, str]]:
    axis = Axis("x", 0.0, px)
    axis.lo, axis.hi = lo, hi
    return axis.ticks()


def is_nice(step: float) -> bool:
    """1, 2, 2.5 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))


def chart_ranges(relative: float, n: int = 400) -> list[tuple[float, float, int]]:
    """Ranges a training chart shows (losses, learning rates, gradient norms, steps, tokens/s, bytes): starts from
    -1e6 to 1e6, spans from 1e-7 up and at least ``relative`` × the start's size, axes 240–900 px long; seeded."""
    rng = np.random.default_rng(27)
    starts = rng.choice([0.0, 1.0], n) * rng.uniform(-1e6, 1e6, n) + rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-6, 3, n)
    spans = np.maximum(10.0 ** rng.uniform(-7, 6, n), np.abs(starts) * relative)
    return [(float(a), float(a + s), int(px)) for a, s, px in zip(starts, spans, rng.integers(240, 901, n))]


def grid_problem(lo: float, hi: float, px: int) -> str | None:
    """What is wrong with the ticks of [lo, hi] on a ``px`` axis: few, nice, evenly spaced, inside, no bare end."""
    values = [c for c, _ in linear_ticks(lo, hi, px)]
    if not 2 <= len(values) <= 10:
        return f"{len(values)} ticks"  # enough to read a value off, few enough not to crowd
    step, slack = values[1] - values[0], 1e-9 * (hi - lo)
    if not (step > 0 and is_nice(step) and np.allclose(np.diff(values), step, rtol=1e-6)):
        return f"steps {np.diff(values)}"
    if any(not math.isclose(v / step, round(v / step), abs_tol=1e-6) for v in values):
        return f"off the step's grid: {values}"
    if not (lo - slack <= values[0] and values[-1] <= hi + slack):
        return f"outside the range: {values}"
    if values[0] - lo > step * (1 + 1e-9) or hi - values[-1] > step * (1 + 1e-9):
        return f"an end left bare: {values}"
    return None


def label_problem(lo: float, hi: float, px: int) -> str | None:
    """What is wrong with the labels: each short, read back as its value, none the same as another."""
    ticks = linear_ticks(lo, hi, px)
    labels, step = [label for _, label in ticks], ticks[1][0] - ticks[0][0]
    if len(set(labels)) != len(labels):
        return f"labels repeat: {labels}"
    wrong = [(c, label) for c, label in ticks if abs(value_of(label) - c) > max(step / 2, 1e-12) or len(label) > 8]
    return f"labels do not read as their ticks: {wrong}" if wrong else None


def test_linear_ticks_are_few_nice_evenly_spaced_and_inside_the_range():
    problems = [(case, p) for case in chart_ranges(relative=0.05) if (p := grid_problem(*case))]
    assert problems == []


def test_labels_read_back_as_their_values_and_tell_the_ticks_apart():  # narrow spans: the test below
    problems = [(case, p) for case in chart_ranges(relative=1.0) if (p := label_problem(*case))]
    assert problems == []


@pytest.mark.parametrize("lo, hi", [(99_990, 100_010), (1.4e-5, 1.6e-5)])
def test_labels_over_a_narrow_span_of_large_or_small_values_differ(lo, hi):
    labels = [label for _, label in linear_ticks(lo, hi)]
    assert len(set(labels)) == len(labels), labels


def test_number_formats():
    assert format_number(0.25, fmt=".0%") == "25%"  # percent axes
    assert format_number(3.0, fmt="d") == "3" and format_number(7, step=1) == "7"  # whole numbers plainly
    assert value_of(format_number(25_000, step=5_000)) == 25_000 and format_number(25_000, step=5_000)[-1] == "k"
    assert value_of(format_number(3.5e6, step=5e5)) == 3.5e6 and format_number(3.5e6, step=5e5)[-1] == "M"
    small = format_number(2e-6, step=2e-6)
    assert value_of(small) == pytest.approx(2e-6) and len(small) <= 8  # learning rates stay short
    assert format_number(0.0, step=0.1) == "0"


def test_whole_number_data_gets_whole_number_ticks():
    svg = render({"data": [{"x": [1, 2, 3], "y": [0.5, 0.25, 0.125]}], "layout": {}})
    x_labels = [value_of(t) for t in tick_texts(svg, "middle")]
    assert len(x_labels) >= 2 and all(float(v).is_integer() for v in x_labels)


def tick_texts(svg: str, anchor: str) -> list[str]:
    """Texts drawn with ``anchor`` that read as numbers: the tick labels of x (``middle``) or y (``end``) axes."""
    out = []
    for label in re.findall(rf"<text [^>]*text-anchor='{anchor}'[^>]*>([^<]*)</text>", svg):
        try:
            value_of(label)
        except ValueError:
            continue
        out.append(label)
    return out


def y_positions(svg: str) -> dict[str, float]:
    """Each y tick label and the height it is drawn at."""
    found = re.findall(r"<text x='[^']*' y='([^']*)' text-anchor='end'>([^<]*)</text>", svg)
    return {label: float(y) for y, label in found}


def test_a_log_axis_shows_decades_evenly_spaced():
    svg = render({"data": [{"x": [1, 2, 3, 4], "y": [1e-3, 0.05, 2.0, 10.0]}], "layout": {"yaxis": {"type": "log"}}})
    at = y_positions(svg)
    decades = [label for label in at if math.log10(value_of(label)).is_integer()]
    values = sorted(value_of(d) for d in decades)
    assert values[0] <= 1e-3 and values[-1] >= 10 and len(values) >= 4  # every decade of the data
    heights = [at[next(d for d in decades if value_of(d) == v)] for v in values]
    gaps = np.diff(heights)
    assert np.all(gaps < 0) and np.allclose(gaps, gaps[0], rtol=1e-2)  # equal steps per decade, upwards


def test_a_linear_y_axis_labels_rise_with_their_values_at_equal_gaps():
    svg = render({"data": [{"x": [0, 1, 2], "y": [0.013, 0.4, 0.87]}], "layout": {}})
    at = sorted((value_of(label), y) for label, y in y_positions(svg).items())
    values, heights = zip(*at)
    assert len(values) >= 3 and is_nice(values[1] - values[0])
    assert np.all(np.diff(heights) < 0) and np.allclose(np.diff(heights), np.diff(heights)[0], rtol=1e-2)


def test_a_category_axis_keeps_the_order_and_slants_long_names():
    short = ["a", "b", "c"]
    svg = render({"data": [{"type": "bar", "x": short, "y": [1, 2, 3]}], "layout": {"width": 400}})
    assert re.findall(r"text-anchor='middle'>([abc])</text>", svg) == short and "rotate(-35)" not in svg
    long = [f"model.layers.{i}.self_attn.q_proj" for i in range(12)]
    svg = render({"data": [{"type": "bar", "x": long, "y": list(range(12))}], "layout": {"width": 400}})
    shown = re.findall(r"rotate\(-35\)' text-anchor='end'>([^<]*)</text>", svg)
    assert shown and shown == [n for n in long if n in shown]  # slanted, in the data's order
