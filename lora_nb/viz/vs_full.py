"""Figures of a LoRA-vs-full-fine-tuning comparison: both loss curves overlaid, and the data-size sweep.

``curves_spec()`` is the layout the live view fills (one trace per entry of ``CURVES``, in that
order); ``result_curves_spec(result)`` draws both arms' whole histories (decimated);
``sweep_spec(result)`` plots eval loss, generalization gap and (classifiers) accuracy against the
training-set size. Each ``*_figure`` is the same as a ``go.Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from ..core.smoothing import SMOOTHING, Ema
from . import figure
from .training import decimate

LABELS = {"lora": "LoRA", "full": "full fine-tuning"}
COLORS = {"lora": (31, 119, 180), "full": (255, 127, 14)}


class Curve(NamedTuple):
    arm: str  # "lora" | "full"
    kind: str  # "loss" (raw) | "smoothed" | "eval"


CURVES = tuple(Curve(arm, kind) for kind in ("loss", "smoothed", "eval") for arm in ("lora", "full"))


def _style(curve: Curve) -> dict:
    r, g, b = COLORS[curve.arm]
    label = LABELS[curve.arm]
    if curve.kind == "loss":
        return dict(name=f"{label} train loss", mode="lines", line=dict(color=f"rgba({r},{g},{b},0.25)", width=1),
                    showlegend=False, hoverinfo="skip")
    if curve.kind == "smoothed":
        return dict(name=f"{label} train loss (smoothed)", mode="lines", line=dict(color=f"rgb({r},{g},{b})", width=2))
    return dict(name=f"{label} eval loss", mode="lines+markers",
                line=dict(color=f"rgb({r},{g},{b})", width=2, dash="dash"))


def curves_spec(title: str | None = None, values: dict | None = None) -> dict:
    """Overlaid-curves layout: loss against optimizer step, one trace per ``CURVES`` entry (``values``: data)."""
    values = values or {}
    data = [{"type": "scatter", "x": values.get(c, ([], []))[0], "y": values.get(c, ([], []))[1], **_style(c)}
            for c in CURVES]
    layout = {"height": 360, "title": {"text": title or "LoRA vs full fine-tuning: loss"},
              "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": "loss"}},
              "margin": {"l": 50, "r": 20, "t": 50, "b": 40}, "legend": {"orientation": "h", "y": -0.2, "x": 0}}
    return {"data": data, "layout": layout}


def curves_figure(title: str | None = None) -> Any:
    """``go.Figure`` of the empty :func:`curves_spec`."""
    return figure(curves_spec(title))


def curve_values(history: Sequence[dict], evals: Sequence[dict]) -> dict[str, tuple[list, list]]:
    """``{kind: (steps, values)}`` of one arm's history."""
    steps = [r["step"] for r in history]
    ema = Ema(SMOOTHING)
    return {"loss": (steps, [r["loss"] for r in history]),
            "smoothed": (steps, [ema.add(r["loss"]) for r in history]),
            "eval": ([e["step"] for e in evals], [e["eval_loss"] for e in evals])}


def result_curves_spec(result: Any, max_points: int = 2000) -> dict:
    """Both arms' whole loss histories (``result``: a ``VsFullResult``), at most ``max_points`` per trace."""
    values = {arm: curve_values(a.history, a.evals) for arm, a in (("lora", result.lora), ("full", result.full))}
    thinned = {c: decimate(*values[c.arm][c.kind], max_points) for c in CURVES}
    return curves_spec(f"loss: {result.headline()}" if len(result.headline()) < 90 else None, thinned)


def result_curves_figure(result: Any, max_points: int = 2000) -> Any:
    """``go.Figure`` of :func:`result_curves_spec`."""
    return figure(result_curves_spec(result, max_points))


def sweep_spec(result: Any) -> dict:
    """Eval loss, generalization gap (eval − train) and accuracy (if measured) against training-set size."""
    sizes = list(result.sizes)
    accuracy = bool(sizes) and result.sweep_arm("lora", sizes[0]).eval_accuracy is not None
    panels = ["eval loss", "generalization gap (eval − train loss)"] + (["eval accuracy"] if accuracy else [])
    gap = 0.08
    width = (1 - gap * (len(panels) - 1)) / len(panels)
    layout: dict[str, Any] = {
        "height": 340, "title": {"text": f"data-size sweep: {result.settings['lora'].steps} steps per run"},
        "margin": {"l": 50, "r": 20, "t": 70, "b": 50}, "legend": {"orientation": "h", "y": -0.28, "x": 0},
        "annotations": []}
    for i, name in enumerate(panels):
        lo = i * (width + gap)
        suffix = str(i + 1) if i else ""
        layout["xaxis" + suffix] = {"domain": [lo, lo + width], "type": "log", "tickvals": sizes,
                                    "title": {"text": "training examples"}, "anchor": "y" + suffix}
        layout["yaxis" + suffix] = {"anchor": "x" + suffix, **({"tickformat": ".0%"} if i == 2 else {})}
        layout["annotations"].append({"text": name, "x": lo + width / 2, "y": 1.0, "xref": "paper", "yref": "paper",
                                      "xanchor": "center", "yanchor": "bottom", "showarrow": False})
    data = []
    for arm in ("lora", "full"):
        arms = [result.sweep_arm(arm, n) for n in sizes]
        r, g, b = COLORS[arm]
        columns = [[a.eval_loss for a in arms], [a.gap for a in arms]] + ([[a.eval_accuracy for a in arms]]
                                                                          if accuracy else [])
        for i, ys in enumerate(columns):
            suffix = str(i + 1) if i else ""
            data.append({"type": "scatter", "x": sizes, "y": ys, "mode": "lines+markers", "name": LABELS[arm],
                         "legendgroup": arm, "showlegend": i == 0, "line": {"color": f"rgb({r},{g},{b})", "width": 2},
                         "xaxis": "x" + suffix, "yaxis": "y" + suffix})
    return {"data": data, "layout": layout}


def sweep_figure(result: Any) -> Any:
    """``go.Figure`` of :func:`sweep_spec`."""
    return figure(sweep_spec(result))
