"""Which adapter a trainer trains: found on the model the trainer holds, its session made or reused.

The models people hand to trainers: a ``PeftModel`` from ``get_peft_model`` (its session is adopted, the model is
not changed), a plain model given to TRL with ``peft_config=`` (the trainer wrapped it in a ``PeftModel`` before
``train``), a model adapted in place by ``lora_nb.attach`` / ``%lora attach`` (its session), and a model with several
adapters (the one whose parameters train is named). A model with no adapter is watched too: its loss curves work,
and one line says what needs an adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import registry
from ..adapters.status import adapter_named_parameters

NO_ADAPTER = ("no LoRA adapter on the trainer's model: its curves are shown, but spectra, the capacity gauge and the "
              "after-run verbs (history, advise, spectrum …) need one (`get_peft_model`, `peft_config=` or "
              "`lora_nb.attach`)")


@dataclass
class Target:
    """The watched model: the user's module, its session (None: no adapter), the adapter trained and its size."""

    module: nn.Module
    session: Any
    adapter: str
    trainable: int
    note: str = ""


def unwrap(model: Any) -> Any:
    """The model inside distributed / compiled wrappers (DDP's ``module``, ``torch.compile``'s original)."""
    for _ in range(4):
        inner = getattr(model, "module", None) if type(model).__name__ in (
            "DistributedDataParallel", "DataParallel") else getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def trained_adapter(session: Any) -> tuple[str, str]:
    """The adapter whose parameters require grad (the active one first) and a note when several do."""
    names = [session.active, *[a for a in session.adapters if a != session.active]]
    training = [a for a in names if any(p.requires_grad for _, p in adapter_named_parameters(session.model, a))]
    if not training:
        return session.active, f"no parameter of adapter `{session.active}` requires grad: nothing of it trains"
    note = "" if len(training) == 1 else (f"adapters {', '.join(f'`{a}`' for a in training)} all train; lora_nb "
                                          f"follows `{training[0]}`")
    return training[0], note


def discover(model: Any) -> Target:
    """The watched model's module, session and trained adapter (no session: loss curves only, ``note`` says so)."""
    model = unwrap(model)
    module = registry.as_module(model)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    session = registry.find(model)  # adopts a PeftModel the user built with peft, as every lora_nb verb does
    if session is None:
        return Target(module, None, "", trainable, NO_ADAPTER)
    adapter, note = trained_adapter(session)
    return Target(module, session, adapter, trainable, note)
