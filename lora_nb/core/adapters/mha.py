"""LoRA on ``nn.MultiheadAttention`` that never touches the base weights while it runs.

``nn.MultiheadAttention`` reads ``in_proj_weight`` and ``out_proj.weight`` directly (it never calls
``out_proj``'s forward), so peft's LoRA layer merges ΔW into them before each forward and subtracts it
after: the base weights drift by float rounding with every call, and are replaced by new ``Parameter``
objects. :class:`ExactMultiheadAttention` instead runs the attention with ``W + ΔW`` passed in for the
call only (``torch.func.functional_call``): the stored weights are never written, so "off" and
``detach`` give the base model bit for bit. Merging adds ΔW in place into the same parameters (so
``merge``'s exact backup restores them); ``out_proj`` is peft's own LoRA ``Linear`` and merges itself
(peft's ``merge_adapter`` visits every LoRA layer). The adapter's factors are those of ``in_proj_weight``
(3·E × E: q, k, v stacked) and, as a separate layer ``<name>.out_proj``, of ``out_proj.weight``.
"""

from __future__ import annotations

import warnings

import torch
from peft.tuners.lora.layer import MultiheadAttention as PeftMultiheadAttention
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn
from torch.func import functional_call


def unsupported_reason(module: nn.MultiheadAttention) -> str | None:
    """Why peft's LoRA cannot adapt this attention layer, or ``None``."""
    if module.kdim != module.embed_dim or module.vdim != module.embed_dim:
        return "separate q/k/v projection weights (kdim or vdim differ from embed_dim)"
    return None


class ExactMultiheadAttention(PeftMultiheadAttention):
    """peft's LoRA for ``nn.MultiheadAttention``, with a forward that leaves the base weights untouched."""

    @property
    def out_proj(self) -> nn.Module:
        """The LoRA wrapper of ``out_proj`` (its ``.weight`` / ``.bias`` are the base layer's)."""
        return self.get_base_layer().out_proj

    def _active(self) -> list[str]:
        return [a for a in self.active_adapters if a in self.lora_A]

    def forward(self, query: torch.Tensor, *args, **kwargs):
        self._check_forward_args(query, *args, **kwargs)
        base = self.get_base_layer()
        if self.disable_adapters and self.merged:
            self.unmerge()
        active = self._active()
        if self.disable_adapters or self.merged or not active:
            return base(query, *args, **kwargs)
        out_proj = base.out_proj
        weights = {
            "in_proj_weight": base.in_proj_weight + sum(self.get_delta_weight(a) for a in active),
            "out_proj.base_layer.weight": out_proj.base_layer.weight
            + sum(out_proj.get_delta_weight(a) for a in active if a in out_proj.lora_A),
        }
        return functional_call(base, weights, (query, *args), kwargs)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add ΔW of ``adapter_names`` (default: active) into ``in_proj_weight`` in place."""
        weight = self.get_base_layer().in_proj_weight
        for adapter in check_adapters_to_merge(self, adapter_names):
            if adapter not in self.lora_A:
                continue
            with torch.no_grad():
                delta = self.get_delta_weight(adapter).to(weight.dtype)
                if safe_merge and not torch.isfinite(weight + delta).all():
                    raise ValueError(f"NaNs detected in the merged weights. The adapter {adapter} seems to be broken")
                weight.add_(delta)
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        """Subtract the merged ΔW from ``in_proj_weight`` in place (and unmerge ``out_proj`` if merged)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        weight = self.get_base_layer().in_proj_weight
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            if adapter in self.lora_A:
                with torch.no_grad():
                    weight.sub_(self.get_delta_weight(adapter).to(weight.dtype))
        if self.out_proj.merged:
            self.out_proj.unmerge()

    def _restore_weights(self) -> None:
        """Nothing to restore: this layer never replaces the base parameters."""
