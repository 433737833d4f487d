"""Figures of a training run: loss (raw, smoothed, eval), learning rate, gradient norm, throughput, memory.

``training_spec()`` is the layout the live dashboard fills (one trace per entry of ``SERIES``);
``history_spec()`` / ``history_figure()`` draw a whole run's history (for saved notebooks and
reports), decimated to at most ``max_points`` points per trace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from . import figure

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun


class Series(NamedTuple):
    key: str
    name: str
    row: int
    col: int


MEMORY_NAME = "memory (MB)"
# trace order of every training figure (the live dashboard indexes traces by position)
SERIES = (
    Series("loss", "train loss", 1, 1),
    Series("loss_smoothed", "train loss (smoothed)", 1, 1),
    Series("eval_loss", "eval loss", 1, 1),
    Series("lr", "learning rate", 1, 3),
    Series("grad_norm", "gradient norm", 2, 1),
    Series("throughput", "throughput", 2, 2),
    Series("memory_mb", MEMORY_NAME, 2, 3),
)
_STYLE = {
    "loss": dict(line=dict(color="rgba(31,119,180,0.35)", width=1)),
    "loss_smoothed": dict(line=dict(color="rgb(31,119,180)", width=2)),
    "eval_loss": dict(mode="lines+markers", line=dict(color="rgb(214,39,40)", width=2)),
}
MEMORY = "memory (MB)"


def memory_title(run: TrainRun) -> str:
    """The memory panel's title for ``run``: what its ``memory_mb`` measures, live and in the final picture alike."""
    gpu = getattr(getattr(run, "device", None), "type", None) == "cuda"
    return "GPU memory allocated (MB)" if gpu else "process RSS (MB)"


def smoothing_for(steps: int | None) -> float:
    """The live EMA's beta for a run of ``steps``: a span of about 1/40 of the run (3 … 20 steps), so the smoothed
    curve lags a few steps behind, not a tenth of the run."""
    span = min(20.0, max(3.0, (steps or 0) / 40))
    return 1.0 - 2.0 / (span + 1.0)


def centred_mean(values: Sequence[float], steps: int | None = None) -> list[float]:
    """A centred moving mean (window about 1/40 of the run, odd, shrinking at the ends): no lag at all."""
    v = np.asarray(values, dtype=float)
    half = int(min(10, max(1, (steps or len(v)) / 80)))
    if v.size == 0:
        return []
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(v.size)
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, v.size)
    return ((c[hi] - c[lo]) / (hi - lo)).tolist()


def loss_scale(values: dict[str, tuple]) -> str:
    """``log`` when the positive losses span more than a decade, else ``linear``."""
    ys = [float(y) for key in ("loss", "eval_loss") for y in values.get(key, ([], []))[1]
          if y is not None and math.isfinite(float(y)) and float(y) > 0]
    return "log" if ys and max(ys) > 10 * min(ys) else "linear"


# the 2 × 3 grid of plotly's make_subplots(rows=2, cols=3, specs=[[{"colspan": 2}, None, {}], [{}, {}, {}]],
# vertical_spacing=0.16): (x domain, y domain) per panel, in the order of the axes x, x2 … x5
PANELS = (((0.0, 0.6444), (0.58, 1.0)), ((0.7111, 1.0), (0.58, 1.0)), ((0.0, 0.2889), (0.0, 0.42)),
          ((0.3556, 0.6444), (0.0, 0.42)), ((0.7111, 1.0), (0.0, 0.42)))
PANEL_OF = {(1, 1): 0, (1, 3): 1, (2, 1): 2, (2, 2): 3, (2, 3): 4}
MARKED = "best eval"


def axis_ref(letter: str, panel: int) -> str:
    return letter + (str(panel + 1) if panel else "")


def training_spec(title: str | None = None, throughput: str = "samples/s", memory: str = MEMORY,
                  values: dict[str, tuple] | None = None, loss_axis: str | None = None) -> dict:
    """The training layout: one trace per entry of ``SERIES``, in that order (``values``: their data); the loss
    panel is on a log scale when its values span more than a decade (``loss_axis``: force ``log`` / ``linear``)."""
    values = values or {}
    data = []
    for s in SERIES:
        panel = PANEL_OF[(s.row, s.col)]
        xs, ys = values.get(s.key, ([], []))
        trace = {"type": "scatter", "x": xs, "y": ys, "name": s.name, "mode": "lines",
                 "xaxis": axis_ref("x", panel), "yaxis": axis_ref("y", panel), **_STYLE.get(s.key, {})}
        if SERIES.index(s) >= 3 or (s.key == "eval_loss" and not len(xs)):  # "eval loss" once there is one
            trace["showlegend"] = False
        data.append(trace)
    names = ("loss", "learning rate", "gradient norm", throughput, memory)
    layout: dict[str, Any] = {
        "height": 490, "margin": {"l": 50, "r": 20, "t": 60 if title else 30, "b": 50},
        "title": {"text": title} if title else None, "showlegend": True,
        # the legend is a row under the title, over the loss panel it describes
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "annotations": [{"text": n, "x": (xd[0] + xd[1]) / 2, "y": yd[1], "xref": "paper", "yref": "paper",
                         "xanchor": "center", "yanchor": "bottom", "showarrow": False}
                        for n, (xd, yd) in zip(names, PANELS)],
    }
    for i, (xd, yd) in enumerate(PANELS):
        layout["xaxis" + ("" if not i else str(i + 1))] = {"domain": list(xd), "anchor": axis_ref("y", i),
                                                            **({"title": {"text": "step"}} if i >= 2 else {})}
        layout["yaxis" + ("" if not i else str(i + 1))] = {"domain": list(yd), "anchor": axis_ref("x", i)}
    layout["yaxis"]["type"] = loss_axis or loss_scale(values)
    layout["yaxis2"]["rangemode"] = "tozero"  # a 1% decay of the learning rate looks like one
    layout["meta"] = {"alt": (f"{title}: " if title else "") + "training curves of " + ", ".join(names)
                      + " against the optimizer step"}
    if layout["title"] is None:
        del layout["title"]
    return {"data": data, "layout": layout}


def mark_best(spec: dict, best: dict | None) -> dict:
    """Add a marker at the best evaluation (``{"step", "eval_loss"}``) to a training spec."""
    if best and best.get("step") is not None and best.get("eval_loss") is not None:
        spec["data"].append({"type": "scatter", "x": [best["step"]], "y": [best["eval_loss"]], "mode": "markers",
                             "name": MARKED, "marker": {"color": "rgb(255,190,0)", "size": 18, "symbol": "star"},
                             "hovertemplate": "best eval loss %{y:.4g} at step %{x}<extra></extra>"})
    return spec


def training_figure(title: str | None = None, throughput: str = "samples/s", memory: str = MEMORY) -> Any:
    """``go.Figure`` of the empty :func:`training_spec`."""
    return figure(training_spec(title, throughput, memory))


def stride_for(n: int, max_points: int) -> int:
    """The smallest power of two that keeps ``n`` points at or under ``max_points``."""
    stride = 1
    while -(-n // stride) > max_points:
        stride *= 2
    return stride


def decimate(xs: Sequence, ys: Sequence, max_points: int) -> tuple[list, list]:
    """Every ``stride``-th point plus the last one, so a trace never exceeds ``max_points`` (+1)."""
    stride = stride_for(len(xs), max_points)
    idx = list(range(0, len(xs), stride))
    if xs and idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def throughput_key(history: Sequence[dict]) -> str:
    """``tokens_per_s`` when the data has tokens, else ``samples_per_s``."""
    return "tokens_per_s" if history and "tokens_per_s" in history[-1] else "samples_per_s"


def series_values(history: Sequence[dict], evals: Sequence[dict]) -> dict[str, tuple[list, list]]:
    """``{series key: (steps, values)}`` of a whole history."""
    steps = [r["step"] for r in history]
    losses = [r["loss"] for r in history]
    out = {"loss": (steps, losses), "loss_smoothed": (steps, centred_mean(losses)),
           "eval_loss": ([e["step"] for e in evals], [e["eval_loss"] for e in evals])}
    tp = throughput_key(history)
    for key in ("lr", "grad_norm", "throughput", "memory_mb"):
        field = tp if key == "throughput" else key
        out[key] = (steps, [r.get(field) for r in history])
    return out


def history_spec(history: Sequence[dict], evals: Sequence[dict] = (), *, title: str | None = None,
                 max_points: int = 2000, memory: str = MEMORY, best: dict | None = None) -> dict:
    """A run's whole history (at most ``max_points`` + 1 points per trace); ``best`` marks the best eval."""
    tp = throughput_key(history).replace("_per_s", "/s")
    values = series_values(history, evals)
    thinned = {s.key: decimate(*values[s.key], max_points) for s in SERIES}
    return mark_best(training_spec(title, throughput=tp, memory=memory, values=thinned), best)


def history_figure(history: Sequence[dict], evals: Sequence[dict] = (), *, title: str | None = None,
                   max_points: int = 2000, memory: str = MEMORY) -> Any:
    """``go.Figure`` of :func:`history_spec`."""
    return figure(history_spec(history, evals, title=title, max_points=max_points, memory=memory))
