"""4-bit / 8-bit (bitsandbytes, QLoRA) base layers: detect them, read W in full precision, guard merges.

lora_nb never imports bitsandbytes itself: a quantized layer is recognised by its class's module, so
models without it pay nothing (and accelerate's launcher, which refuses to fork once bitsandbytes is
imported, is not tripped). W is dequantized per layer on the layer's own device with peft's
``dequantize_module_weight``. Merging into a quantized W re-quantizes W+ΔW: the update is rounded to
the 4/8-bit grid (most of a small ΔW vanishes) and the original W cannot be restored exactly, so
``merge`` refuses unless ``allow_rounding=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import AdapterError, first_line


def is_quantized(layer: nn.Module) -> bool:
    """True when ``layer`` (or a LoRA wrapper's base layer) is a bitsandbytes 4-bit or 8-bit layer."""
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    return type(base).__module__.split(".")[0] == "bitsandbytes"


def bits(layer: nn.Module) -> int:
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    return 4 if "4bit" in type(base).__name__ else 8


def dequantized(layer: nn.Module) -> torch.Tensor:
    """The base weight of a quantized layer as a float32 tensor (stored layout), on the layer's device."""
    from peft.utils.integrations import dequantize_module_weight

    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    try:
        return dequantize_module_weight(base).detach().float()
    except Exception as exc:  # no backend for this device
        raise AdapterError(f"cannot dequantize a {bits(layer)}-bit bitsandbytes layer here "
                           f"({type(exc).__name__}: {first_line(exc)}): "
                           "bitsandbytes needs a GPU, or its CPU backend (bitsandbytes ≥ 0.45)") from None


def check_merge(layers: list[nn.Module], adapter: str, allow_rounding: bool) -> None:
    """Refuse merging ``adapter`` into quantized layers unless rounding was accepted."""
    quantized = [layer for layer in layers if is_quantized(layer)]
    if quantized and not allow_rounding:
        raise AdapterError(f"{len(quantized)} layer(s) of `{adapter}` have {bits(quantized[0])}-bit quantized base "
                           "weights: merging re-quantizes W+ΔW, rounding the update and losing the exact base; "
                           "pass `allow_rounding=True` to merge anyway")
