"""W + ΔW for every module an adapter touches, computed aside in float32: the live model is only read.

The merged weights keep the base's dtype (a 4/8-bit bitsandbytes base is dequantized first and written in its
compute dtype). DoRA and LoRA-bias adapters merge through peft's own variant code on a copy of W. A ``modules_to_save``
copy replaces the original module. ``write_merged`` saves an ordinary transformers folder (safetensors, config,
tokenizer) that ``from_pretrained`` loads without peft or lora_nb.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import AdapterError
from .. import registry
from ..adapters import quantized
from ..adapters.factors import base_matrix, layer_factors, lora_layers
from .request import Job, Shipped, listing
from .survival import Survival, cast_rounding, kept


@dataclass
class Adapted:
    """One adapted module: its weight's state-dict key, W and W + ΔW (float32, the layer's stored layout)."""

    name: str
    key: str
    base: torch.Tensor
    merged: torch.Tensor

    @property
    def delta(self) -> torch.Tensor:
        return self.merged - self.base


@dataclass
class Merged:
    """An adapter merged aside: the full state dict (HF names, export dtype) and the adapted modules."""

    adapter: str
    dtype: torch.dtype
    state: dict[str, torch.Tensor]
    adapted: list[Adapted]
    model: nn.Module


def check_exportable(session: registry.Session, adapter: str) -> None:
    """Refuse states an export cannot represent: a merged adapter, or LoRA on nn.MultiheadAttention."""
    for name, layer in lora_layers(session, adapter):
        if list(getattr(layer, "merged_adapters", [])):
            raise AdapterError("an adapter is merged into the base weights; unmerge it before exporting "
                               "(`%lora unmerge`)")
        if isinstance(layer.get_base_layer(), nn.MultiheadAttention):
            raise AdapterError(f"`{name}` is an nn.MultiheadAttention layer, which transformers folders and GGUF "
                               "files do not describe; export the adapter with `%lora save` instead")


def _merged_weight(layer: nn.Module, adapter: str, w: torch.Tensor) -> torch.Tensor:
    """W + ΔW for ``layer`` (stored layout, float32); DoRA and other variants through peft's ``merge_safe``."""
    variant = getattr(layer, "lora_variant", {}).get(adapter)
    if variant is None:
        return w + layer.get_delta_weight(adapter).detach().float()
    caches = dict(getattr(layer, "_caches", {}))
    try:
        return variant.merge_safe(layer, adapter, w.clone()).detach().float()
    finally:
        if hasattr(layer, "_caches"):  # merge_safe stores DoRA's weight norm on the layer: put the cache back
            layer._caches.clear()
            layer._caches.update(caches)


def adapted_modules(session: registry.Session, adapter: str) -> tuple[list[Adapted], dict[str, torch.Tensor]]:
    """The adapted weights, and the merged biases of LoRA-bias layers (``{key: bias + s·b}``)."""
    found, biases = [], {}
    with torch.no_grad():
        for name, layer in lora_layers(session, adapter):
            f = layer_factors(name, layer, adapter)
            w = f.to_stored(base_matrix(layer, f)).float().clone()
            found.append(Adapted(name, f"{name}.weight", w, _merged_weight(layer, adapter, w)))
            if getattr(layer, "lora_bias", {}).get(adapter):
                bias = layer.get_base_layer().bias.detach().float()
                biases[f"{name}.bias"] = bias + layer.lora_B[adapter].bias.detach().float() * layer.scaling[adapter]
    return found, biases


def _quantized_names(model: nn.Module) -> list[str]:
    names = []
    for name, module in model.named_modules():
        if quantized.is_quantized(module) and not hasattr(module, "get_base_layer"):
            names.append(".".join(p for p in name.split(".") if p != "base_layer"))
    return names


def export_dtype(model: nn.Module) -> torch.dtype:
    """The base's float dtype: its most common floating parameter dtype outside LoRA (a 4-bit base: compute dtype)."""
    counts: Counter = Counter()
    for name, p in model.named_parameters():
        if p.is_floating_point() and not any(part.startswith("lora_") for part in name.split(".")):
            counts[p.dtype] += p.numel()
    for module in model.modules():
        if quantized.is_quantized(module) and getattr(module, "compute_dtype", None) is not None:
            return module.compute_dtype
    return counts.most_common(1)[0][0] if counts else torch.float32


def _renamed(model: nn.Module, adapter: str) -> dict[str, str]:
    """``{export key: state-dict key}``: LoRA tensors dropped, ``modules_to_save.<adapter>`` copies in place of the
    originals, peft's wrappers out of the names."""
    originals, trained = {}, {}
    for key in model.state_dict():
        parts = key.split(".")
        if any(p.startswith("lora_") for p in parts):
            continue
        if "modules_to_save" in parts:
            i = parts.index("modules_to_save")
            if parts[i + 1] == adapter:
                trained[".".join(parts[:i] + parts[i + 2:])] = key
            continue
        originals[".".join(p for p in parts if p not in ("base_layer", "original_module"))] = key
    return {**originals, **trained}


def _quantized_keys(keys: list[str], name: str) -> list[str]:
    return [k for k in keys if k.startswith((f"{name}.weight.", f"{name}.SCB", f"{name}.weight_format"))]


def state_keys(model: nn.Module, adapter: str) -> list[str]:
    """The names ``plain_state`` gives the model's tensors, read without touching a tensor (for checks)."""
    keys = list(_renamed(model, adapter))
    for name in _quantized_names(model):
        dropped = set(_quantized_keys(keys, name))
        keys = [k for k in keys if k not in dropped] + [f"{name}.weight"]
    return list(dict.fromkeys(keys))


def plain_state(model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The model's state under its own names: LoRA tensors dropped, ``modules_to_save.<adapter>`` copies in place
    of the originals, 4/8-bit weights dequantized (their quantization state dropped)."""
    values = model.state_dict()
    state = {new: values[old] for new, old in _renamed(model, adapter).items()}
    for name in _quantized_names(model):
        module = model.get_submodule(name) if name else model
        for key in _quantized_keys(list(state), name):
            del state[key]
        state[f"{name}.weight"] = quantized.dequantized(module).cpu()
    return state


def merge_aside(model: Any, adapter: str | None = None) -> Merged:
    """``adapter`` (default: the active one) merged into a copy of the weights; the model is left untouched."""
    session = registry.require(model)
    adapter = session.check_adapter(adapter) if adapter else session.active
    check_exportable(session, adapter)
    with session.lock:
        dtype = export_dtype(session.model)
        adapted, biases = adapted_modules(session, adapter)
        state = {k: v.detach().cpu() for k, v in plain_state(session.model, adapter).items()}
    for a in adapted:
        state[a.key] = a.merged.to(dtype).cpu()
    for key, bias in biases.items():
        state[key] = bias.to(state[key].dtype).cpu()
    for key, value in state.items():  # dequantized weights and fp32 copies join the export dtype
        if value.is_floating_point() and value.dtype != dtype and value.dim() > 1:
            state[key] = value.to(dtype)
    return Merged(adapter, dtype, state, adapted, session.model)


def write_merged(merged: Merged, folder: Path, tokenizer: Any = None) -> list[str]:
    """Save ``merged`` as a transformers folder (or ``model.safetensors`` for a plain module); the files written."""
    model = merged.model
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained") and hasattr(model, "config"):
        model.save_pretrained(str(folder), state_dict=merged.state)
        config_file = folder / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("quantization_config", None)  # the weights are plain floats now
        config["dtype"] = str(merged.dtype).removeprefix("torch.")
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in merged.state.items()}, str(folder / "model.safetensors"))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(folder))
    return listing(folder)


def check(job: Job) -> None:
    """What a merged folder cannot represent, refused before anything is written."""
    check_exportable(job.session, job.adapter)


def write(job: Job, staging: Path) -> Shipped:
    """The merged model as a transformers folder, written into ``staging``; how much of ΔW its dtype keeps."""
    merged = merge_aside(job.model, job.adapter)
    files = write_merged(merged, staging, job.tokenizer)
    survival = Survival(str(merged.dtype).removeprefix("torch."))
    for a in merged.adapted:
        survival.modules[a.name] = kept(a.base, a.delta, cast_rounding(merged.dtype))
    notes = [] if job.tokenizer is not None else [
        "no tokenizer given (--tokenizer VAR): the folder holds the model only"]
    return Shipped(job.target, job.format.name, None, files, 0.0, survival, notes)
