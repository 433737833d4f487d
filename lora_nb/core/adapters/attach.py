"""Attach LoRA adapters to a model in place, and take them off again."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ...errors import AdapterError, LoraNBWarning
from .. import registry
from . import switch
from .offload import materialize_adapter
from .options import AttachOptions
from .targets import match_names, named_modules, resolve_targets, target_regex


def _min_dim(module: nn.Module) -> int | None:
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() < 2:
        return None
    if isinstance(module, nn.Embedding):
        return min(module.num_embeddings, module.embedding_dim)
    if hasattr(module, "in_features") and hasattr(module, "out_features"):  # also 4-bit layers (packed weight)
        return min(module.in_features, module.out_features)
    return min(weight.shape[0], weight[0].numel())


def _warn_rank(model: nn.Module, names: list[str], r: int) -> None:
    modules = dict(named_modules(model))
    small = [n for n in names if (d := _min_dim(modules[n])) is not None and r > d]
    if small:
        warnings.warn(
            f"r={r} exceeds min(in, out) of {len(small)} layer(s) (e.g. {small[0]}): their update has rank "
            "at most min(in, out), so part of the adapter is redundant",
            LoraNBWarning,
            stacklevel=3,
        )


def _stores_transposed(model: nn.Module, names: list[str]) -> bool:
    """True when the targets are transformers ``Conv1D`` layers (weights stored in × out)."""
    from .targets import conv1d_type

    modules = dict(named_modules(model))
    return bool(conv1d_type()) and any(isinstance(modules[n], conv1d_type()) for n in names)


def strip_lora(model: nn.Module) -> None:
    """Put back the original module of every peft wrapper in ``model`` (LoRA layers, modules_to_save)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, (LoraLayer, ModulesToSaveWrapper)) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if isinstance(getattr(parent, child, None), (LoraLayer, ModulesToSaveWrapper)):
                original = module.original_module if isinstance(module, ModulesToSaveWrapper) else module
                setattr(parent, child, original.get_base_layer() if isinstance(original, LoraLayer) else original)
    if hasattr(model, "peft_config"):
        del model.peft_config


def attach(model: Any, **options: Any) -> "registry.Session":
    """Inject a LoRA adapter into ``model`` in place; the model now runs with it.

    Options are those of :class:`AttachOptions` (r, alpha, dropout, targets, name,
    dora, rslora, init, replace). The new adapter becomes the active one.
    """
    opts = AttachOptions(**options)
    model = registry.as_module(model)
    session = registry.find(model)
    if session is not None:
        session.ensure_idle("attach an adapter")
        if opts.name in session.adapters:
            if not opts.replace:
                raise AdapterError(
                    f"adapter `{opts.name}` already exists; pass --replace to replace it or --name for another"
                )
    names = resolve_targets(model, opts.targets)
    if opts.modules_to_save:
        match_names(model, opts.modules_to_save)  # one-line error (with candidates) if one matches nothing
    _warn_rank(model, names, opts.r)
    config = opts.lora_config(target_regex(names), fan_in_fan_out=_stores_transposed(model, names))
    if session is not None and opts.name in session.adapters:
        if session.adapters == [opts.name]:
            detach(model)
            session = None
        else:
            delete_adapter(model, opts.name)
    if session is None:
        session = new_session(model, config, opts.name)
    else:
        switch.unmerge_first(session)  # exactly; peft's add_adapter would unmerge by subtraction
        session.peft.add_adapter(opts.name, config)
        switch.turn_on(session, opts.name)  # active and on
    session.records[opts.name] = {"options": {**vars(opts), "targets": names}, "runs": []}
    materialize_adapter(session, opts.name)  # offloaded layers (device_map): factors off `meta`, see core.dispatch
    session.notify("attach")
    return session


def new_session(model: nn.Module, config, name: str) -> "registry.Session":
    from peft import get_peft_model

    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*already.*modified.*")
            # transformers deprecates the attribute peft reads while wrapping; nothing the user can act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapper = get_peft_model(model, config, adapter_name=name)
    except BaseException:
        strip_lora(model)
        _restore_flags(model, flags)
        raise
    session = registry.Session(model, wrapper, flags)
    registry.register(session)
    return session


def _restore_flags(model: nn.Module, flags: dict[str, bool]) -> None:
    for n, p in model.named_parameters():
        if n in flags:
            p.requires_grad_(flags[n])


def detach(model: Any) -> nn.Module:
    """Remove every adapter; the base parameters are exactly those from before attach."""
    session = registry.require(model)
    session.ensure_idle("detach")
    restore = session.merge_backup  # set by merge: exact copies of merged weights
    if restore is not None:
        restore()
    strip_lora(session.model)  # peft's unload would keep the *trained* copy of modules_to_save
    _restore_flags(session.model, session.requires_grad)
    registry.forget(session.model)
    session.notify("detach")
    return session.model


def delete_adapter(model: Any, adapter: str) -> None:
    """Remove one adapter; removing the last one detaches LoRA entirely."""
    session = registry.require(model)
    session.ensure_idle("delete an adapter")
    session.check_adapter(adapter)
    if session.adapters == [adapter]:
        detach(model)
        return
    switch.unmerge_first(session, {adapter})
    session.peft.delete_adapter(adapter)
    session.records.pop(adapter, None)
    session.notify("delete")


