"""Figures of short-run comparisons: final loss against learning rate (the lr sweep), loss curves per placement.

``lr_sweep_spec(points)`` takes the runs finished so far (the live view redraws it after each run) or a whole
``LrSweepResult``; ``placement_spec(runs)`` the runs of a placement test. Both are plain specs for the SVG
renderer (``figure(spec)`` makes the plotly figure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..core.smoothing import Ema
from .training import SMOOTHING

COLORS = {"lora": (31, 119, 180), "full": (255, 127, 14), "attention": (148, 103, 189), "all": (44, 160, 44)}
LABELS = {"lora": "LoRA", "full": "full fine-tuning", "attention": "attention only", "all": "all linear layers"}


def _rgb(arm: str, alpha: float = 1.0) -> str:
    r, g, b = COLORS.get(arm, (90, 90, 90))
    return f"rgba({r},{g},{b},{alpha})"


def lr_sweep_spec(points: Sequence[Any], title: str | None = None, measure: str = "final loss") -> dict:
    """Final loss against learning rate (log x), one line per method, its best run as a big marker."""
    data = []
    for arm in dict.fromkeys(p.arm for p in points):
        runs = sorted((p for p in points if p.arm == arm), key=lambda p: p.lr)
        finite = [p for p in runs if math.isfinite(p.final_loss)]
        best = min(finite, key=lambda p: p.final_loss) if finite else None
        label = LABELS.get(arm, arm) + (f" (best lr {best.lr:.2g})" if best else "")
        data.append({"type": "scatter", "mode": "lines+markers", "name": label,
                     "x": [p.lr for p in finite], "y": [p.final_loss for p in finite],
                     "line": {"color": _rgb(arm), "width": 2}})
        if best:
            data.append({"type": "scatter", "mode": "markers", "name": f"best {LABELS.get(arm, arm)}",
                         "showlegend": False, "x": [best.lr], "y": [best.final_loss],
                         "marker": {"size": 12, "color": _rgb(arm)}, "line": {"color": _rgb(arm)}})
    diverged = [p for p in points if not math.isfinite(p.final_loss)]
    note = f" · diverged: {', '.join(f'{LABELS.get(p.arm, p.arm)} {p.lr:.2g}' for p in diverged)}" if diverged else ""
    layout = {"height": 360, "title": {"text": (title or "final loss against learning rate") + note},
              "xaxis": {"title": {"text": "learning rate"}, "type": "log"},
              "yaxis": {"title": {"text": measure}}, "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
              "legend": {"orientation": "h", "y": -0.25, "x": 0}}
    return {"data": data, "layout": layout}


def placement_spec(runs: Sequence[Any], names: dict[str, str] | None = None, title: str | None = None) -> dict:
    """Training loss (raw, faint; smoothed, solid) against step for each run; ``names``: arm → legend label."""
    data = []
    for run in runs:
        steps = list(range(1, len(run.losses) + 1))
        ema = Ema(SMOOTHING)
        label = (names or {}).get(run.arm, LABELS.get(run.arm, run.arm))
        data.append({"type": "scatter", "mode": "lines", "name": f"{label} (raw)", "showlegend": False,
                     "x": steps, "y": list(run.losses), "line": {"color": _rgb(run.arm, 0.3), "width": 1}})
        data.append({"type": "scatter", "mode": "lines", "name": label, "x": steps,
                     "y": [ema.add(v) for v in run.losses], "line": {"color": _rgb(run.arm), "width": 2}})
    layout = {"height": 360, "title": {"text": title or "LoRA placement at equal parameters: training loss"},
              "xaxis": {"title": {"text": "step"}}, "yaxis": {"title": {"text": "loss"}},
              "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "legend": {"orientation": "h", "y": -0.25, "x": 0}}
    return {"data": data, "layout": layout}


def placement_names(result: Any) -> dict[str, str]:
    """Legend labels of a ``PlacementResult``: where, rank and parameter count."""
    return {k: f"{LABELS[k]}: r={a.rank}, {a.params:,} parameters" for k, a in result.arms.items()}
