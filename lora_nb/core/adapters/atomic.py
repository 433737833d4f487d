"""All or nothing: a change to a model's adapters is either complete or leaves the model as it was.

``guarded(model)`` wraps the part of an operation that changes the model — peft's injection, filling the
weights, switching the active adapter, the session's registration and records. Ctrl-C is held back across
it (see ``interrupts``); any exception inside it (a failure, or a ``KeyboardInterrupt`` raised there by other
means) puts the model back as it was before the section: adapters added in it removed, the session as it
was (or none), the active adapter, on/off and merged state, and every parameter's ``requires_grad`` flag.
Operations that remove things (detach) are finished instead (``finishing``): their steps can be repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .. import registry
from ..interrupts import deferred_interrupts
from . import switch
from .inject import peft_wrappers, strip_lora, undo_add


@dataclass
class Snapshot:
    """What ``restore`` puts back: the session object and the per-adapter state peft keeps."""

    session: registry.Session | None
    flags: list[tuple[nn.Parameter, bool]]
    wrappers: dict[str, nn.Module] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)
    active: str | None = None
    enabled: bool = True
    merged: list[str] = field(default_factory=list)
    merge_backup: Callable[[], None] | None = None
    records: dict[str, dict] = field(default_factory=dict)


def capture(model: nn.Module) -> Snapshot:
    """The state of ``model``'s adapters as ``restore`` needs it."""
    session = registry.find(model)
    snap = Snapshot(session, [(p, p.requires_grad) for p in model.parameters()])
    if session is None:
        return snap
    layers = switch.layer_index(session).layers
    snap.wrappers, snap.adapters, snap.active = peft_wrappers(model), session.adapters, session.active
    snap.enabled = not any(layer.disable_adapters for layer, _ in layers)
    snap.merged = sorted(switch.merged_adapters(session))
    snap.merge_backup, snap.records = session.merge_backup, dict(session.records)
    return snap


def restore(model: nn.Module, snap: Snapshot) -> None:
    """Put ``model`` back in the state ``snap`` recorded (removing whatever was added since)."""
    current = registry.find(model)
    if snap.session is None:
        if current is not None and current.merge_backup is not None:
            current.merge_backup()
        strip_lora(model)
        registry.forget(model)
    else:
        _restore_session(model, snap)
    for p, flag in snap.flags:
        p.requires_grad_(flag)


def _restore_session(model: nn.Module, snap: Snapshot) -> None:
    """``restore`` for a model that had a session: the session back in place, the adapters added since removed."""
    session = snap.session
    assert session is not None
    registry.register(session)
    if session.merge_backup is not None:  # exact originals back, also in a layer peft had half merged or unmerged
        session.merge_backup()
    switch.unmerge_first(session)  # exactly, while every layer is still in place
    added = {*session.adapters, *registry.adapters_in_layers(model)} - set(snap.adapters)  # also half-added ones
    for name in sorted(added):
        undo_add(model, snap.wrappers, name)
        session.peft.peft_config.pop(name, None)
    session.records.clear()
    session.records.update(snap.records)
    if session.layer_index is not None:
        session.layer_index.stale = True
    if snap.active is not None and snap.active in session.adapters:
        switch.set_active(session, snap.active)
    switch.set_enabled(session, snap.enabled)
    if snap.merged:  # merging again gives the same bits; the exact originals stay in the kept backup
        session.lora.merge_adapter(adapter_names=snap.merged)
    session.merge_backup = snap.merge_backup


@contextmanager
def guarded(model: nn.Module) -> Iterator[Snapshot]:
    """Change ``model``'s adapters in the body, all or nothing (Ctrl-C held back until the body ends)."""
    with deferred_interrupts():
        snap = capture(model)
        try:
            yield snap
        except BaseException:
            restore(model, snap)
            raise


@contextmanager
def finishing(finish: Callable[[], Any]) -> Iterator[None]:
    """Run the body with Ctrl-C held back; if it fails half-way, ``finish`` (which repeats its steps) completes
    it before the exception goes on."""
    with deferred_interrupts():
        try:
            yield
        except BaseException:
            finish()
            raise
