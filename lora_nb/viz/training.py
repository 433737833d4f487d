"""Figures of a training run: loss (raw, smoothed, eval), learning rate, gradient norm, throughput, memory.

``training_figure()`` is the empty layout the live dashboard fills in place; ``history_figure()``
draws a whole run's history statically (for saved notebooks and reports), decimated to at most
``max_points`` points per trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..core.training.reporting import Ema


class Series(NamedTuple):
    key: str
    name: str
    row: int
    col: int


# trace order of every training figure (the live dashboard indexes traces by position)
SERIES = (
    Series("loss", "train loss", 1, 1),
    Series("loss_smoothed", "train loss (smoothed)", 1, 1),
    Series("eval_loss", "eval loss", 1, 1),
    Series("lr", "learning rate", 1, 3),
    Series("grad_norm", "gradient norm", 2, 1),
    Series("throughput", "throughput", 2, 2),
    Series("memory_mb", "memory (MB)", 2, 3),
)
_STYLE = {
    "loss": dict(line=dict(color="rgba(31,119,180,0.35)", width=1)),
    "loss_smoothed": dict(line=dict(color="rgb(31,119,180)", width=2)),
    "eval_loss": dict(mode="lines+markers", line=dict(color="rgb(214,39,40)", width=2)),
}
SMOOTHING = 0.9


def training_figure(title: str | None = None, throughput: str = "samples/s", memory: str = "memory (MB)") -> go.Figure:
    """The empty training layout: one trace per entry of ``SERIES``, in that order."""
    fig = make_subplots(
        rows=2, cols=3, specs=[[{"colspan": 2}, None, {}], [{}, {}, {}]], vertical_spacing=0.16,
        subplot_titles=("loss", "learning rate", "gradient norm", throughput, memory),
    )
    for s in SERIES:
        style = {"mode": "lines", **_STYLE.get(s.key, {})}
        fig.add_trace(go.Scatter(x=[], y=[], name=s.name, **style), row=s.row, col=s.col)
    # the legend sits under the plots, so a run's title line (static picture) never crosses it
    fig.update_layout(height=490, margin=dict(l=50, r=20, t=60 if title else 30, b=70), title=title,
                      legend=dict(orientation="h", yanchor="top", y=-0.14, x=0), showlegend=True)
    for s in SERIES[3:]:
        fig.data[SERIES.index(s)].showlegend = False
    fig.update_xaxes(title_text="step", row=2)
    return fig


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
    ema = Ema(SMOOTHING)
    out = {"loss": (steps, [r["loss"] for r in history]),
           "loss_smoothed": (steps, [ema.add(r["loss"]) for r in history]),
           "eval_loss": ([e["step"] for e in evals], [e["eval_loss"] for e in evals])}
    tp = throughput_key(history)
    for key in ("lr", "grad_norm", "throughput", "memory_mb"):
        field = tp if key == "throughput" else key
        out[key] = (steps, [r.get(field) for r in history])
    return out


def history_figure(history: Sequence[dict], evals: Sequence[dict] = (), *, title: str | None = None,
                   max_points: int = 2000, memory: str = "memory (MB)") -> go.Figure:
    """A static figure of a run's history (at most ``max_points`` + 1 points per trace)."""
    tp = throughput_key(history).replace("_per_s", "/s")
    fig = training_figure(title, throughput=tp, memory=memory)
    values = series_values(history, evals)
    for i, s in enumerate(SERIES):
        xs, ys = decimate(*values[s.key], max_points)
        fig.data[i].x, fig.data[i].y = xs, ys
    return fig
