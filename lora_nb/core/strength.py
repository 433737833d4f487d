"""An adapter's strength: how much of its update ΔW is applied (1 = as trained, 0 = none, 2 = double).

The strength is never stored here: it is read back from peft's per-layer ``scaling[adapter]``
divided by the configured scale (``alpha / r``, or ``alpha / sqrt(r)`` with rslora), and written
through peft's ``LoraLayer.set_scale``.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import AdapterError, OptionError
from . import registry, switch

MAX_STRENGTH = 2.0


def _layers(session, adapter: str):
    return [layer for layer, params in switch.layer_index(session).layers if adapter in layer.scaling]


def _configured(layer, adapter: str) -> float:
    r, alpha = layer.r[adapter], layer.lora_alpha[adapter]
    return alpha / math.sqrt(r) if layer.use_rslora.get(adapter, False) else alpha / r


def strength(model: Any, adapter: str | None = None) -> float | None:
    """The strength of ``adapter`` (default: active) read from peft; ``None`` when its layers disagree."""
    session = registry.require(model)
    adapter = session.check_adapter(adapter) if adapter is not None else session.active
    values = [layer.scaling[adapter] / _configured(layer, adapter) for layer in _layers(session, adapter)]
    if not values:
        return None
    first = values[0]
    return first if all(math.isclose(v, first, rel_tol=1e-9, abs_tol=1e-12) for v in values) else None


def set_strength(model: Any, value: float, adapter: str | None = None) -> None:
    """Scale ``adapter``'s contribution to ``value`` × its trained update (0 ≤ value ≤ 2)."""
    session = registry.require(model)
    session.ensure_idle("change an adapter's strength")
    adapter = session.check_adapter(adapter) if adapter is not None else session.active
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"strength must be a number between 0 and {MAX_STRENGTH:g}; got `{value}`") from None
    if not 0.0 <= value <= MAX_STRENGTH:
        raise OptionError(f"strength must be between 0 and {MAX_STRENGTH:g}; got {value:g}")
    if adapter in switch.merged_adapters(session):
        raise AdapterError(f"adapter `{adapter}` is merged; unmerge it before changing its strength")
    for layer in _layers(session, adapter):
        layer.set_scale(adapter, value)
    session.notify("strength")
