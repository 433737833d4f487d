"""Attach LoRA adapters to a model in place, and take them off again."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ...errors import AdapterError, LoraNBWarning, OptionError
from .. import registry
from ..interrupts import deferred_interrupts
from . import switch
from .atomic import finishing, guarded
from .inject import inject, quiet_peft, restore_flags, strip_lora
from .keys import adapter_state_dict, fill_adapter
from .merge import merge
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


def _warn_rank(model: nn.Module, names: list[str], r: int, pattern: dict[str, int] | None = None) -> None:
    from peft.utils.other import get_pattern_key

    modules, pattern = dict(named_modules(model)), pattern or {}
    rank = {n: pattern.get(get_pattern_key(pattern, n), r) for n in names}
    small = [n for n in names if (d := _min_dim(modules[n])) is not None and rank[n] > d]
    if small:
        warnings.warn(
            f"r={rank[small[0]]} exceeds min(in, out) of {len(small)} layer(s) (e.g. {small[0]}): their update has "
            "rank at most min(in, out), so part of the adapter is redundant",
            LoraNBWarning,
            stacklevel=3,
        )


def _stores_transposed(model: nn.Module, names: list[str]) -> bool:
    """True when the targets are transformers ``Conv1D`` layers (weights stored in × out)."""
    from .targets import conv1d_type

    modules = dict(named_modules(model))
    return bool(conv1d_type()) and any(isinstance(modules[n], conv1d_type()) for n in names)


def _peft_config(opts: AttachOptions, model: nn.Module, names: list[str]):
    """peft's ``LoraConfig`` for exactly these targets; Linear/Conv subclasses get lora_nb's LoRA layers."""
    from .custom_layers import own_forward, register

    modules = dict(named_modules(model))
    no_dora = [n for n in names if own_forward(modules[n]) or isinstance(modules[n], nn.MultiheadAttention)]
    if opts.dora and no_dora:
        raise OptionError(f"`dora=True` cannot adapt `{no_dora[0]}` ({type(modules[no_dora[0]]).__name__}); "
                          "leave it out of `targets=…` or drop `dora=True`")
    config = opts.lora_config(target_regex(names), fan_in_fan_out=_stores_transposed(model, names))
    register(config, [modules[n] for n in names])
    return config


def attach(model: Any, *, r: int = 8, alpha: float = 16, dropout: float = 0.0, targets: str | list[str] = "auto",
           name: str = "default", dora: bool = False, rslora: bool = False, init: bool | str = True,
           replace: bool = False, modules_to_save: str | list[str] | None = None,
           rank_pattern: str | dict[str, int] | None = None) -> "registry.Session":
    """Inject a LoRA adapter into ``model`` in place; the model now runs with it and it becomes the active one.

    The options are :class:`AttachOptions`' fields (same names, defaults and checks; ``%lora attach`` takes them
    as ``--r``, ``--alpha``, …): ``r`` rank, ``alpha`` scaling numerator (ΔW is scaled by alpha/r), ``dropout``
    on the adapter's input, ``targets`` ("auto", module names or a regex), ``name``, ``dora``, ``rslora``,
    ``init`` (peft's init_lora_weights), ``replace`` an adapter of the same name, ``modules_to_save`` (trained
    in full beside LoRA), ``rank_pattern`` ("advised" or {module: rank}).
    """
    opts = AttachOptions(r=r, alpha=alpha, dropout=dropout, targets=targets, name=name, dora=dora, rslora=rslora,
                         init=init, replace=replace, modules_to_save=modules_to_save, rank_pattern=rank_pattern)
    model = registry.as_module(model)
    session = registry.find(model)
    if session is None:
        registry.check_unowned(model)
    else:
        session.ensure_idle("attach an adapter")
        session.verify()
        if opts.name in session.adapters:
            if not opts.replace:
                raise AdapterError(
                    f"adapter `{opts.name}` already exists; pass `replace=True` to replace it or `name=…` for another"
                )
    if opts.rank_pattern == "advised":
        opts = advised(session, opts)
    names = resolve_targets(model, opts.targets)
    if opts.modules_to_save:
        match_names(model, opts.modules_to_save)  # one-line error (with candidates) if one matches nothing
    _warn_rank(model, names, opts.r, opts.rank_pattern)
    config = _peft_config(opts, model, names)
    record = {"options": {**vars(opts), "targets": names}, "runs": []}
    if session is not None and opts.name in session.adapters:
        session = _replace(session, opts.name, config, record)
    else:
        with guarded(model):  # Ctrl-C held back; any failure leaves the model as it was
            session = new_session(model, config, opts.name) if session is None else session
            if opts.name not in session.adapters:
                _add(session, opts.name, config)
            _finish(session, opts.name, record)
    session.notify("attach")
    return session


def _finish(session: "registry.Session", name: str, record: dict) -> None:
    session.records[name] = record
    materialize_adapter(session, name)  # offloaded layers (device_map): factors off `meta`, see offload.py


def advised(session: "registry.Session | None", opts: AttachOptions) -> AttachOptions:
    """``opts`` with the session's last rank advice as its rank pattern (and, for targets=auto, its modules)."""
    advice = getattr(session, "advice", None)
    if advice is None:
        raise OptionError("no rank advice for this model yet: run `lora_nb.advise(model)` first")
    targets = list(advice.rank_pattern) if opts.targets == "auto" else opts.targets
    return replace(opts, rank_pattern=dict(advice.rank_pattern), targets=targets)


def _add(session: "registry.Session", name: str, config) -> None:
    """Add adapter ``name`` beside the others, active and on; if peft fails half-way, nothing of it is left."""
    switch.unmerge_first(session)  # exactly; peft's add_adapter would unmerge by subtraction
    inject(session.model, session, config, name)
    switch.turn_on(session, name)  # active and on


@dataclass
class _Kept:
    """An adapter as it was, to put back exactly if replacing it fails."""

    config: Any
    tensors: dict[str, torch.Tensor]
    record: dict | None
    strength: float | None
    active: str
    enabled: bool
    merged: bool


def _replace(session: "registry.Session", name: str, config, record: dict) -> "registry.Session":
    """Replace adapter ``name`` atomically (Ctrl-C held back): if the new one cannot be injected, the old one is put
    back as it was."""
    kept = _Kept(session.peft.peft_config[name], adapter_state_dict(session.model, name),
                 session.records.get(name), switch.strength(session.model, name), session.active,
                 _enabled(session),
                 name in switch.merged_adapters(session))
    model, only = session.model, session.adapters == [name]
    with deferred_interrupts():
        try:
            if only:
                detach(model)
                session = new_session(model, config, name)
            else:
                delete_adapter(model, name)
                _add(session, name, config)
            _finish(session, name, record)
            return session
        except BaseException:
            _put_back(model, name, kept)
            raise


def _enabled(session: "registry.Session") -> bool:
    return not any(layer.disable_adapters for layer, _ in switch.layer_index(session).layers)


def _put_back(model: nn.Module, name: str, kept: _Kept) -> None:
    session = registry.find(model)
    if session is not None and session.adapters == [name]:  # the new one alone: clear it, as detach does
        _detach(session)
        session = None
    elif session is not None and name in session.adapters:
        with quiet_peft():
            session.peft.delete_adapter(name)
    if session is None:
        session = new_session(model, kept.config, name)
    else:
        _add(session, name, kept.config)
    problem = fill_adapter(model, name, kept.tensors)
    if problem:  # the same config was just injected again: a mismatch is a bug, never silent
        raise RuntimeError(f"could not put adapter `{name}` back as it was: {problem}")
    if kept.record is not None:
        session.records[name] = kept.record
    if kept.strength is not None and kept.strength != 1.0:
        switch.set_strength(model, kept.strength, adapter=name)
    switch.turn_on(session, kept.active)
    if kept.merged:
        merge(model, name)
    if not kept.enabled:
        switch.turn_off(session)


def new_session(model: nn.Module, config, name: str) -> "registry.Session":
    """A session whose first adapter is ``name``; if peft fails half-way, the model is left as it was."""
    return inject(model, None, config, name)


def detach(model: Any) -> nn.Module:
    """Remove every adapter; the base parameters are exactly those from before attach."""
    session = registry.require(model, verify=False)  # also the way out when the layers changed behind its back
    session.ensure_idle("detach")
    with finishing(lambda: _detach(session)):  # Ctrl-C held back; a failure half-way is finished, not left
        _detach(session)
    session.notify("detach")
    return session.model


def _detach(session: "registry.Session") -> None:
    """detach's steps; each can be repeated, so a detach cut short is completed by running them again."""
    restore = session.merge_backup  # set by merge: exact copies of merged weights (it clears itself when done)
    if restore is not None:
        restore()
    strip_lora(session.model)  # peft's unload would keep the *trained* copy of modules_to_save
    restore_flags(session.model, session.requires_grad)
    registry.forget(session.model)


def delete_adapter(model: Any, adapter: str) -> None:
    """Remove one adapter; removing the last one detaches LoRA entirely."""
    session = registry.require(model)
    session.ensure_idle("delete an adapter")
    session.check_adapter(adapter)
    if session.adapters == [adapter]:
        detach(model)
        return
    switch.unmerge_first(session, {adapter})
    with quiet_peft():
        session.peft.delete_adapter(adapter)
    session.records.pop(adapter, None)
    session.notify("delete")


