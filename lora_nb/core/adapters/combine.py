"""A new adapter as a weighted combination of existing ones (peft's ``add_weighted_adapter``).

peft defines the combinations; for the two exact-by-construction types:

- ``cat``: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …] → ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ (rank Σ rᵢ);
- ``linear``: with cᵢ = √|wᵢsᵢ|, A = Σ sign(wᵢ)·cᵢ·Aᵢ and B = Σ cᵢ·Bᵢ → ΔW = B·A (needs equal ranks;
  not Σ wᵢΔWᵢ, only an approximation of it);

``svd`` (peft's default) projects Σ wᵢΔWᵢ onto the best rank max(rᵢ) approximation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import AdapterError, OptionError, did_you_mean
from .. import registry
from . import switch
from .inject import quiet_peft, restore_flags
from .options import AttachOptions

TYPES = ("svd", "linear", "cat")  # peft's others (ties, dare_*, magnitude_prune) also need a density


def _as_list(value: str | Sequence) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _weights(weights: str | Sequence) -> list[float]:
    try:
        return [float(w) for w in _as_list(weights)]
    except (TypeError, ValueError):
        raise OptionError(f"weights must be numbers, e.g. 0.7,0.3; got `{weights}`") from None


def _check(session, adapters: list[str], weights: list[float], name: str, kind: str) -> None:
    if not adapters:
        raise OptionError("combine needs at least one adapter (--adapters a,b)")
    if len(weights) != len(adapters):
        raise OptionError(f"got {len(adapters)} adapter(s) but {len(weights)} weight(s); give one weight per adapter")
    for adapter in adapters:
        session.check_adapter(adapter)
    AttachOptions(name=name)  # the same naming rules as attach
    if name in session.adapters:
        raise AdapterError(f"adapter `{name}` already exists; choose another --name")
    if kind not in TYPES:
        raise OptionError(f"combination type `{kind}` is not one of {', '.join(TYPES)}{did_you_mean(kind, TYPES)}")
    ranks = {a: session.peft.peft_config[a].r for a in adapters}
    if kind == "linear" and len(adapters) > 1 and len(set(ranks.values())) > 1:
        shown = ", ".join(f"{a}: r={r}" for a, r in ranks.items())
        raise OptionError(f"combination type `linear` needs adapters of equal rank ({shown}); use `cat` or `svd`")


def combine(model: Any, adapters: str | Sequence[str], weights: str | Sequence[float], name: str = "mix",
            combination_type: str = "svd", activate: bool = True) -> str:
    """Add adapter ``name`` = weighted combination of ``adapters`` (peft's definition); make it active."""
    session = registry.require(model)
    session.ensure_idle("combine adapters")
    adapters, weights = _as_list(adapters), _weights(weights)
    _check(session, adapters, weights, name, combination_type)
    switch.unmerge_first(session)  # peft combines factors; merged weights would be left stale
    flags = {n: p.requires_grad for n, p in session.model.named_parameters()}
    try:
        with quiet_peft():
            session.lora.add_weighted_adapter(adapters, weights, name, combination_type=combination_type)
    except (ValueError, TypeError) as exc:
        if name in session.adapters:
            session.peft.delete_adapter(name)
        raise AdapterError(f"peft cannot combine {', '.join(adapters)}: {exc}") from None
    finally:  # peft freezes every parameter whose name merely *contains* the new name (`a` is in `default`)
        restore_flags(session.model, flags)
    session.records[name] = {
        "options": {"combined_from": adapters, "weights": weights, "combination_type": combination_type},
        "runs": [],
    }
    if activate:
        switch.turn_on(session, name)
    session.notify("combine")
    return name
