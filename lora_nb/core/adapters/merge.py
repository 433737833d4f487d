"""Merge the active adapter into the base weights and back out, restoring the base bit-identically.

peft's ``unmerge_adapter`` subtracts ΔW again, which is exact only up to float rounding (and in
bf16/fp16 loses visible precision). ``merge`` therefore keeps an exact copy of every base parameter
that merging changes — the weight (and bias) of each adapted layer, nothing else — so ``unmerge`` and
``detach`` put the original bits back. Memory cost: one extra copy of the adapted layers' base
weights, in their dtype (e.g. 2 × 4096 × 4096 × 2 bytes ≈ 64 MiB per bf16 attention projection pair);
``keep_base=False`` skips it and relies on peft's subtraction.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import AdapterError
from .. import registry
from . import switch
from .atomic import guarded
from .quantized import check_merge


def _merged_layers(session, adapter: str):
    return [(layer, params) for layer, params in switch.layer_index(session).layers if adapter in params]


def _backup(layers) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """Exact copies of the base parameters of ``layers`` (what merging writes into)."""
    saved = []
    for layer, _ in layers:
        for p in layer.get_base_layer().parameters(recurse=False):
            saved.append((p, p.detach().clone()))
    return saved


def _restorer(session, saved: list[tuple[torch.nn.Parameter, torch.Tensor]]):
    def restore_base() -> None:
        """peft's unmerge (so its merged flags are cleared), then the exact original bits."""
        switch.peft_unmerge(session)
        with torch.no_grad():
            for p, original in saved:
                p.copy_(original)
        session.merge_backup = None

    return restore_base


def merge(model: Any, adapter: str | None = None, keep_base: bool = True, allow_rounding: bool = False) -> str:
    """Merge ``adapter`` (default: the active one) into the base weights; returns its name.

    The adapter becomes active and enabled. With ``keep_base`` (default) an exact copy of the
    changed base weights is kept so :func:`unmerge` and ``detach`` restore them bit-identically.
    """
    session = registry.require(model)
    session.ensure_idle("merge")
    adapter = session.check_adapter(adapter) if adapter is not None else session.active
    merged = switch.merged_adapters(session)
    if merged:
        raise AdapterError(f"adapter `{sorted(merged)[0]}` is already merged; unmerge it first "
                            "(`lora_nb.unmerge(model)`)")
    check_merge([layer for layer, _ in _merged_layers(session, adapter)], adapter, allow_rounding)  # 4/8-bit
    with guarded(session.model):  # Ctrl-C held back; a failure half-way unmerges exactly and switches back
        switch.turn_on(session, adapter)
        layers = _merged_layers(session, adapter)
        if keep_base:  # in place before peft writes, so a merge cut short is undone from the exact copies
            session.merge_backup = _restorer(session, _backup(layers))
        try:
            session.lora.merge_adapter(adapter_names=[adapter])
        except ValueError as exc:  # peft refuses e.g. gptq-quantized or replicated layers
            raise AdapterError(f"cannot merge `{adapter}`: {exc}") from None
    session.notify("merge")
    return adapter


def unmerge(model: Any) -> None:
    """Take merged adapters out of the base weights (bit-identical when merge kept the base)."""
    session = registry.require(model)
    session.ensure_idle("unmerge")
    if not switch.merged_adapters(session):
        raise AdapterError("no adapter is merged; nothing to unmerge")
    switch.unmerge_first(session)
    session.notify("unmerge")


def merged(model: Any) -> list[str]:
    """Names of the adapters merged into the base weights (in any layer)."""
    return sorted(switch.merged_adapters(registry.require(model)))
