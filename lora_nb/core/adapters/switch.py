"""Switching adapters: on / off / active adapter, and strength — peft's own per-layer state, written fast.

Fast on / off / switch of adapters: peft's own per-layer state, set without walking the whole model.

peft's ``enable_adapter_layers`` / ``set_adapter`` walk every module of the model and, per LoRA layer,
every adapter's sub-modules via ``parameters()`` to set ``requires_grad``: ~10 ms for 224 layers of a tiny
Llama on this CPU, dominated by ``named_modules`` recursion (3,335 modules). Here an index of the LoRA
layers and of each adapter's parameters (rebuilt whenever the set of adapters changes) lets the same
peft state (``_disable_adapters``, ``_active_adapter``, ``requires_grad``, and ``active_adapter`` of
LoraModel and PeftModel) be written in under a millisecond (benchmarks/toggle.py). A test checks
the result equals what peft's own calls produce.
Models with auxiliary wrappers (``modules_to_save``) or adapter variants that freeze weights take
peft's own path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ...errors import AdapterError, OptionError
from .. import registry
from .options import as_number

MAX_STRENGTH = 2.0
_STRUCTURAL = {"attach", "delete", "load", "combine", "detach"}


@dataclass(eq=False)
class LayerIndex:
    """The LoRA layers of a session and, per layer, each adapter's parameters."""

    token: tuple
    layers: list[tuple[nn.Module, dict[str, list[nn.Parameter]]]] = field(default_factory=list)
    places: list[tuple[nn.Module, str]] = field(default_factory=list)  # per layer: (parent module, attribute)
    fast: bool = True
    stale: bool = False

    def on_model_change(self, session, what: str) -> None:
        if what in _STRUCTURAL:
            self.stale = True

    def intact(self, session) -> bool:
        """True when the index is current and every indexed layer still sits where it was found (cheap: no walk)."""
        return (not self.stale and self.token == _token(session)
                and all(any(name in p for _, p in self.layers) for name in session.adapters)
                and all(getattr(parent, key, None) is layer
                        for (parent, key), (layer, _) in zip(self.places, self.layers)))


def _token(session) -> tuple:
    return tuple((name, id(config)) for name, config in session.peft.peft_config.items())


def _build(session) -> LayerIndex:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    index = LayerIndex(_token(session))
    children = ((parent, key, module) for parent in session.model.modules() for key, module in parent.named_children())
    for parent, key, module in children:
        if isinstance(module, AuxiliaryTrainingWrapper):
            index.fast = False
        elif isinstance(module, BaseTunerLayer):
            index.places.append((parent, key))
            if getattr(module, "frozen_peft_weight_names", None):
                index.fast = False
            params: dict[str, list[nn.Parameter]] = {}
            for attr in module.adapter_layer_names:
                container = getattr(module, attr)
                for adapter, sub in container.items():
                    found = [sub] if isinstance(sub, nn.Parameter) else list(sub.parameters())
                    params.setdefault(adapter, []).extend(found)
            index.layers.append((module, params))
    return index


def layer_index(session) -> LayerIndex:
    """The session's layer index, rebuilt when adapters were added, replaced or removed."""
    index = session.layer_index
    if index is None or index.stale or index.token != _token(session):
        index = _build(session)
        session.layer_index = index
        session.listeners.add(index)
    return index


def _set_grads(params: dict[str, list[nn.Parameter]], active: list[str]) -> None:
    for adapter, found in params.items():
        flag = adapter in active
        for p in found:
            if p.is_leaf and p.requires_grad != flag:
                p.requires_grad_(flag)


def set_enabled(session, enabled: bool) -> None:
    """peft's ``enable_adapter_layers`` / ``disable_adapter_layers``, on indexed layers only."""
    index = layer_index(session)
    if not index.fast:
        (session.lora.enable_adapter_layers if enabled else session.lora.disable_adapter_layers)()
        return
    for layer, params in index.layers:
        _set_grads(params, list(layer.active_adapters) if enabled else [])
        layer._disable_adapters = not enabled


def set_active(session, adapter: str) -> None:
    """peft's ``PeftModel.set_adapter(adapter)``, on indexed layers only (layers must not be merged)."""
    index = layer_index(session)
    if not index.fast or any(layer.merged for layer, _ in index.layers):
        session.peft.set_adapter(adapter)
        return
    for layer, params in index.layers:
        _set_grads(params, [adapter])
        layer._active_adapter = [adapter]
    session.lora.active_adapter = adapter
    session.peft.active_adapter = adapter


def merged_adapters(session) -> set[str]:
    """Adapters merged into the base weights in at least one layer (peft's per-layer state)."""
    return {name for layer, _ in layer_index(session).layers for name in layer.merged_adapters}


def unmerge_first(session, adapters: set[str] | None = None) -> None:
    """Unmerge (exactly, when merge kept the base weights) before a change peft would unmerge inexactly."""
    merged = merged_adapters(session)
    if not merged or (adapters is not None and not merged & adapters):
        return
    restore = session.merge_backup  # set by merge
    if restore is not None:
        restore()
    else:
        peft_unmerge(session)


def peft_unmerge(session) -> None:
    """peft's ``unmerge_adapter``, on merged layers only (peft warns for each layer that is not)."""
    from peft.tuners.tuners_utils import onload_layer

    for layer, _ in layer_index(session).layers:
        if layer.merged:
            with onload_layer(layer):
                layer.unmerge()


def turn_on(session, adapter: str | None = None) -> None:
    """Adapters on; with ``adapter``, make it the active one (a merged other adapter is unmerged first)."""
    if adapter is not None and adapter != session.active:
        unmerge_first(session)
        set_active(session, adapter)
    set_enabled(session, True)


def turn_off(session) -> None:
    """Adapters off: a merged adapter is unmerged first, so outputs are exactly the base model's."""
    unmerge_first(session)
    set_enabled(session, False)

def enable(model: Any, adapter: str | None = None) -> None:
    """Turn adapters on; with ``adapter``, make it the active one."""
    session = registry.require(model)
    session.ensure_idle("switch adapters")
    if adapter is not None:
        session.check_adapter(adapter)
    turn_on(session, adapter)
    session.notify("enable")


def disable(model: Any) -> None:
    """Turn every adapter off: outputs are then exactly the base model's."""
    session = registry.require(model)
    session.ensure_idle("switch adapters off")
    turn_off(session)
    session.notify("disable")


# -- strength: how much of ΔW is applied (1 = as trained, 0 = none, 2 = double) -----------------------
# Never stored here: read back from peft's per-layer scaling[adapter] divided by the configured scale
# (alpha / r, or alpha / sqrt(r) with rslora), and written through peft's LoraLayer.set_scale.



def _layers(session, adapter: str):
    return [layer for layer, params in layer_index(session).layers if adapter in layer.scaling]


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
    value = as_number("strength", value, float)
    if not 0.0 <= value <= MAX_STRENGTH:
        raise OptionError(f"strength must be between 0 and {MAX_STRENGTH:g}; got {value:g}")
    if adapter in merged_adapters(session):
        raise AdapterError(f"adapter `{adapter}` is merged; unmerge it before changing its strength")
    for layer in _layers(session, adapter):
        layer.set_scale(adapter, value)
    session.notify("strength")
