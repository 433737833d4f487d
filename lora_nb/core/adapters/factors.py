"""An adapter's LoRA factors per module, copied as one consistent snapshot.

Every analysis (spectra, similarity, weight views) starts here. Factors are kept in
the *mathematical* orientation ``ΔW = scaling · B @ A`` with ``A: r × in`` (the input
side) and ``B: out × r``, whatever the layer type stores:

- ``nn.Linear``: peft's ``lora_A`` / ``lora_B`` weights as they are;
- transformers ``Conv1D`` (GPT-2, ``fan_in_fan_out=True``): same factors; the layer
  stores its weight (and ``get_delta_weight``) as ``in × out``, i.e. transposed;
- ``nn.Conv1d/2d/3d``: ``lora_A`` is a conv ``r × in × k…`` flattened to ``r × (in·k…)``,
  ``lora_B`` a 1×1 conv ``out × r``; the weight is ``ΔW`` reshaped to the kernel;
- ``nn.MultiheadAttention``: the layer's factors update ``in_proj_weight`` (3·E × E, q/k/v stacked);
  its ``out_proj`` is a LoRA ``Linear`` of its own, named ``<attention>.out_proj``;
- ``nn.Embedding``: ``lora_embedding_A`` is ``r × num_embeddings`` (input side) and
  ``lora_embedding_B`` is ``embedding_dim × r``; peft's delta is ``(B @ A)ᵀ · s``,
  so the stored weight is transposed like ``Conv1D``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import LoraNBError, TargetError, did_you_mean, preview
from .. import registry
from ..lowrank import one_thread
from .targets import compile_regex


@dataclass(frozen=True)
class Factors:
    """One module's LoRA update ``ΔW = scaling · B @ A`` (a detached copy)."""

    name: str  # the user's qualified module name
    kind: str  # "linear", "conv1d-gpt2", "conv", "embedding"
    A: torch.Tensor  # r × in
    B: torch.Tensor  # out × r
    scaling: float
    transposed: bool  # the layer stores its weight as in × out
    weight_shape: tuple[int, ...]  # the stored shape of the layer's weight

    @property
    def r(self) -> int:
        return self.A.shape[0]

    @property
    def out_features(self) -> int:
        return self.B.shape[0]

    @property
    def in_features(self) -> int:
        return self.A.shape[1]

    def to_stored(self, matrix: torch.Tensor) -> torch.Tensor:
        """An ``out × in`` matrix laid out like the layer's weight (and peft's ``get_delta_weight``)."""
        if self.kind == "conv":
            return matrix.reshape(self.weight_shape)
        return matrix.T if self.transposed else matrix

    def from_stored(self, weight: torch.Tensor) -> torch.Tensor:
        """The layer's weight as an ``out × in`` matrix (inverse of :meth:`to_stored`)."""
        if self.kind == "conv":
            return weight.reshape(weight.shape[0], -1)
        return weight.T if self.transposed else weight


def lora_layers(session: "registry.Session", adapter: str) -> Iterator[tuple[str, nn.Module]]:
    """``(user's name, peft LoraLayer)`` for every module that carries ``adapter``."""
    from peft.tuners.lora import LoraLayer

    for name, module in session.model.named_modules():
        if isinstance(module, LoraLayer) and (adapter in module.lora_A or adapter in module.lora_embedding_A):
            yield ".".join(part for part in name.split(".") if part != "base_layer"), module  # nested: MHA out_proj


def work_device(t: torch.Tensor) -> torch.device:
    """Where float64 linear algebra on ``t`` runs (MPS has neither float64 nor a full SVD)."""
    return torch.device("cpu") if t.device.type == "mps" else t.device


def base_weight(layer: nn.Module) -> torch.Tensor:
    """The weight LoRA updates: the base layer's ``weight`` (``in_proj_weight`` of a MultiheadAttention)."""
    base = layer.get_base_layer()
    return base.in_proj_weight if isinstance(base, nn.MultiheadAttention) else base.weight


def resolve_adapter(session: "registry.Session", adapter: str | None) -> str:
    """``adapter`` checked against the model's adapters, or the active one."""
    return session.check_adapter(adapter) if adapter else session.active


def select(session: "registry.Session", adapter: str, layers: str | None = None) -> list[tuple[str, nn.Module]]:
    """The adapted modules whose names the regex ``layers`` finds (all when ``None``)."""
    found = list(lora_layers(session, adapter))
    if not layers:
        return found
    rx = compile_regex(layers, "layers")
    hits = [(n, m) for n, m in found if rx.search(n)]
    if not hits:
        kinds = dict.fromkeys(n.rsplit(".", 1)[-1] for n, _ in found)
        raise TargetError(
            f"`layers={layers!r}` matches none of the {len(found)} modules of adapter `{adapter}`; "
            f"candidates: {preview(kinds, 8)} (e.g. {found[0][0]})"
        )
    return hits


def _copy(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def layer_factors(name: str, layer: nn.Module, adapter: str) -> Factors:
    """Copy ``layer``'s factors for ``adapter`` (call under ``session.lock``)."""
    from .targets import conv1d_type

    base = layer.get_base_layer()
    if any(p.is_meta for n, p in layer.named_parameters() if f".{adapter}" in f".{n}" and "lora_" in n):
        raise LoraNBError(f"the `{adapter}` factors of `{name}` are on the meta device (never materialized)")
    scaling = float(layer.scaling[adapter])
    shape = tuple(base_weight(layer).shape)
    if adapter in layer.lora_embedding_A:
        a, b = layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]
        return Factors(name, "embedding", _copy(a), _copy(b), scaling, True, shape)
    a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    if isinstance(base, nn.modules.conv._ConvNd):
        if base.groups > 1:
            raise LoraNBError(f"`{name}` is a grouped convolution (groups={base.groups}); its ΔW is not B·A")
        return Factors(name, "conv", _copy(a).reshape(a.shape[0], -1), _copy(b).reshape(b.shape[0], -1),
                       scaling, False, shape)
    kind = "conv1d-gpt2" if conv1d_type() and isinstance(base, conv1d_type()) else "linear"
    return Factors(name, kind, _copy(a), _copy(b), scaling, bool(getattr(layer, "fan_in_fan_out", False)), shape)


def read(model, adapter: str | None = None, layers: str | None = None) -> tuple[str, list[Factors]]:
    """``(adapter, factors)`` of every selected module, copied under ``session.lock``.

    The training loop holds the lock around optimizer steps, so the copy is never torn.
    """
    session = registry.require(model)
    adapter = resolve_adapter(session, adapter)
    with session.lock, one_thread():
        chosen = select(session, adapter, layers)
        return adapter, [layer_factors(n, m, adapter) for n, m in chosen if not _grouped(m)]


def _grouped(layer: nn.Module) -> bool:
    base = layer.get_base_layer()
    return isinstance(base, nn.modules.conv._ConvNd) and base.groups > 1


def base_matrix(layer: nn.Module, f: Factors) -> torch.Tensor:
    """The layer's base weight ``W`` as ``out × in`` float32 on its device, minus any merged adapter."""
    from .quantized import dequantized, is_quantized

    weight = base_weight(layer)
    if weight.is_meta:
        raise LoraNBError(f"the base weight of `{f.name}` is on the meta device (not loaded); W spectra need it")
    w = dequantized(layer) if is_quantized(layer) else weight.detach().float()  # 4/8-bit: per layer
    merged = list(getattr(layer, "merged_adapters", []))
    if merged:  # the stored weight is W + Σ merged ΔW: take them out again, as peft's unmerge does
        w = w.clone()
        for name in merged:
            w -= layer.get_delta_weight(name).detach().float()
    return f.from_stored(w)


def weight_key(layer: nn.Module) -> tuple:
    """Changes whenever the base weight (or what is merged into it) changes."""
    weight = base_weight(layer)
    merged = tuple(getattr(layer, "merged_adapters", []))
    return (weight.data_ptr(), weight._version, merged, *(adapter_key(layer, a) for a in merged))


def adapter_key(layer: nn.Module, adapter: str) -> tuple:
    """Changes whenever ``adapter``'s factors or scaling on ``layer`` change."""
    if adapter in layer.lora_embedding_A:
        params = [layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]]
    else:
        params = [layer.lora_A[adapter].weight, layer.lora_B[adapter].weight]
    return (adapter, float(layer.scaling[adapter]), *((p.data_ptr(), p._version) for p in params))


def one(model, module: str, adapter: str | None = None) -> Factors:
    """The factors of one adapted module, with a one-line error naming close module names."""
    session = registry.require(model)
    adapter = resolve_adapter(session, adapter)
    with session.lock:
        found = dict(lora_layers(session, adapter))
        if module not in found:
            raise TargetError(f"`{module}` is not a module of adapter `{adapter}`"
                              f"{did_you_mean(module, found)} (modules: {preview(list(found), 4)})")
        return layer_factors(module, found[module], adapter)
