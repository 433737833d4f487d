"""Models dispatched over devices (``device_map``, accelerate's ``dispatch_model``): where a layer computes.

A dispatched model keeps each layer where accelerate put it; lora_nb never moves it to one device
(``place_model`` leaves multi-device models alone). Layers offloaded to disk or CPU have their base
weights on the ``meta`` device, loaded by accelerate's hooks only for the forward. peft creates a new
adapter's factors next to the base weight, so on an offloaded layer they would be ``meta`` too — never
initialised, and the model's output wrong. ``materialize_adapter`` puts them on the layer's execution
device, initialised as peft would. Training a model with offloaded base weights is refused: the
gradients would flow through weights that exist only during each hook's forward.
"""

from __future__ import annotations

import torch
from torch import nn


def execution_device(layer: nn.Module) -> torch.device | None:
    """The device accelerate runs ``layer`` (or its base layer) on, if a hook says so."""
    for module in (layer, getattr(layer, "base_layer", None)):
        hook = getattr(module, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return None


def materialize_adapter(session, adapter: str) -> list[str]:
    """Give ``adapter``'s factors that peft left on ``meta`` in hook-offloaded layers real storage; their names."""
    from peft.tuners.lora import LoraLayer

    init = getattr(session.peft.peft_config[adapter], "init_lora_weights", True)
    fixed = []
    for name, layer in session.model.named_modules():
        if not isinstance(layer, LoraLayer) or adapter not in layer.lora_A:
            continue
        factors = [layer.lora_A[adapter], layer.lora_B[adapter]]
        if not any(p.is_meta for f in factors for p in f.parameters()):
            continue
        device = execution_device(layer)
        if device is None:  # not offloaded by a hook: an empty (never loaded) model keeps peft's meta factors
            continue
        for f in factors:
            f.to_empty(device=device)
        with torch.no_grad():
            if init is False:  # peft leaves the factors as their layers' constructors made them: do the same
                for f in factors:
                    f.reset_parameters()
            else:
                layer.reset_lora_parameters(adapter, init)
        fixed.append(name)
    return fixed


def offloaded(model: nn.Module) -> list[str]:
    """Names of base parameters that live on ``meta`` (offloaded to disk/CPU by a hook, or never loaded)."""
    return [n for n, p in model.named_parameters() if p.is_meta and "lora_" not in n]
