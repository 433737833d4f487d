"""The capacity gauge as a picture: trainable parameters against supervised tokens (log-log), the rule as a line."""

from __future__ import annotations

from typing import Any

from ..core.training.capacity import RULE


def capacity_spec(points: dict[str, tuple[int, int]], title: str | None = None) -> dict:
    """``points``: label → (supervised tokens, trainable parameters); the line params = RULE × tokens across them."""
    shown = {k: v for k, v in points.items() if v[0] > 0 and v[1] > 0}
    values = [x for t, p in shown.values() for x in (t, p / RULE)] or [1, 10]
    low, high = min(values) / 4, max(values) * 4
    data: list[dict[str, Any]] = [{"type": "scatter", "mode": "lines", "name": f"rule of thumb: {RULE:g} parameter "
                                   "per supervised token", "x": [low, high], "y": [low * RULE, high * RULE],
                                   "line": {"color": "rgb(120,120,120)", "width": 2, "dash": "dash"}}]
    colors = ("rgb(31,119,180)", "rgb(44,160,44)", "rgb(214,39,40)")
    for i, (label, (tokens, params)) in enumerate(shown.items()):
        data.append({"type": "scatter", "mode": "markers", "name": f"{label}: {params / tokens:.3g} per token",
                     "x": [tokens], "y": [params], "marker": {"size": 10, "color": colors[i % 3]},
                     "line": {"color": colors[i % 3]}})
    layout = {"height": 340, "title": {"text": title or "capacity: above the line LoRA has room; far below, it "
                                                        "runs out (LoRA Without Regret, 2025)"},
              "xaxis": {"title": {"text": "supervised (loss-bearing) tokens seen"}, "type": "log"},
              "yaxis": {"title": {"text": "trainable parameters"}, "type": "log"},
              "margin": {"l": 70, "r": 20, "t": 50, "b": 50}, "legend": {"orientation": "h", "y": -0.3, "x": 0}}
    return {"data": data, "layout": layout}


def advice_capacity_spec(advice: Any) -> dict:
    """The gauge of a rank ``Advice``: the adapter now and with the advised pattern, at the tokens it saw."""
    return capacity_spec({f"`{advice.adapter}` now": (advice.tokens, advice.params("now")),
                          "advised pattern": (advice.tokens, advice.params("pattern"))})
