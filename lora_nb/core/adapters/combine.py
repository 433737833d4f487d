"""A new adapter as a weighted combination of existing ones (peft's ``add_weighted_adapter``).

peft defines the combinations; for the two exact-by-construction types:

- ``cat``: A = [w₁s₁A₁; w₂s₂A₂; …], B = [B₁ B₂ …] → ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ (rank Σ rᵢ);
- ``linear``: with cᵢ = √|wᵢsᵢ|, A = Σ sign(wᵢ)·cᵢ·Aᵢ and B = Σ cᵢ·Bᵢ → ΔW = B·A (needs equal ranks;
  not Σ wᵢΔWᵢ, only an approximation of it);

``svd`` (peft's default) projects Σ wᵢΔWᵢ onto the best rank max(rᵢ) approximation. How exact the
result is, per module, is kept in ``session.records[name]["errors"]`` (see ``combination_error``);
summing adapters whose ΔWs point the same way (cosine ≥ 0.5 in a module) gives a note.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from ...errors import AdapterError, LoraNBWarning, OptionError, did_you_mean
from .. import lowrank, registry
from . import switch
from .atomic import guarded
from .inject import quiet_peft, restore_flags
from .options import AttachOptions

TYPES = ("svd", "linear", "cat")  # peft's others (ties, dare_*, magnitude_prune) also need a density
OVERLAP = 0.5  # cos(ΔWᵢ, ΔWⱼ) from which two summed adapters are said to overlap strongly


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
        raise OptionError("combine needs at least one adapter (`adapters=[\"a\", \"b\"]`)")
    if len(weights) != len(adapters):
        raise OptionError(f"got {len(adapters)} adapter(s) but {len(weights)} weight(s); give one weight per adapter")
    for adapter in adapters:
        session.check_adapter(adapter)
    AttachOptions(name=name)  # the same naming rules as attach
    if name in session.adapters:
        raise AdapterError(f"adapter `{name}` already exists; choose another `name=…`")
    if kind not in TYPES:
        raise OptionError(f"combination type `{kind}` is not one of {', '.join(TYPES)}{did_you_mean(kind, TYPES)}")
    ranks = {a: session.peft.peft_config[a].r for a in adapters}
    if kind == "linear" and len(adapters) > 1 and len(set(ranks.values())) > 1:
        shown = ", ".join(f"{a}: r={r}" for a, r in ranks.items())
        raise OptionError(f"combination type `linear` needs adapters of equal rank ({shown}); use `cat` or `svd`")


def _warn_overlap(session, adapters: list[str], weights: list[float]) -> None:
    """A note when two adapters summed with same-signed weights point the same way in some module."""
    if len(adapters) < 2:
        return
    with session.lock:
        shared = lowrank.shared_pairs(session.model.named_modules(), adapters)
        worst = {name: lowrank.cosines(pairs) for name, pairs in shared.items()}
    hits = []
    for i in range(len(adapters)):
        for j in range(i + 1, len(adapters)):
            sign = 1.0 if weights[i] * weights[j] >= 0 else -1.0
            cos = {n: sign * float(c[i, j]) for n, c in worst.items()}
            strong = [n for n, v in cos.items() if v >= OVERLAP]
            if strong:
                top = max(strong, key=cos.get)
                hits.append(f"`{adapters[i]}` and `{adapters[j]}` in {len(strong)} of {len(cos)} modules "
                            f"(cos ΔW up to {cos[top]:.2f} in {top})")
    if hits:
        warnings.warn("strongly overlapping adapters are summed: " + "; ".join(hits) + " — their shared "
                      "direction adds up, so the mix moves further along it than either adapter", LoraNBWarning,
                      stacklevel=3)


def _errors(session, adapters: list[str], weights: list[float], name: str) -> dict[str, float]:
    """Per module: ‖ΔW_new − Σ wᵢΔWᵢ‖_F / ‖Σ wᵢΔWᵢ‖_F, from low-rank traces (``cat``: 0 up to rounding)."""
    with session.lock:
        shared = lowrank.shared_pairs(session.model.named_modules(), [*adapters, name])
        return {n: lowrank.relative_error(p[-1], p[:-1], weights) for n, p in shared.items()}


def combination_error(model: Any, name: str) -> dict[str, float]:
    """How exactly combined adapter ``name`` equals Σ wᵢΔWᵢ, per module (relative Frobenius error)."""
    session = registry.require(model)
    session.check_adapter(name)
    errors = session.records.get(name, {}).get("errors")
    if errors is None:
        raise AdapterError(f"adapter `{name}` was not made by combine")
    return errors


def combine(model: Any, adapters: str | Sequence[str], weights: str | Sequence[float], name: str = "mix",
            combination_type: str = "svd", activate: bool = True) -> str:
    """Add adapter ``name`` = weighted combination of ``adapters`` (peft's definition); make it active."""
    session = registry.require(model)
    session.ensure_idle("combine adapters")
    adapters, weights = _as_list(adapters), _weights(weights)
    _check(session, adapters, weights, name, combination_type)
    _warn_overlap(session, adapters, weights)
    with guarded(session.model):  # Ctrl-C held back; a failure half-way leaves the model as it was
        switch.unmerge_first(session)  # peft combines factors; merged weights would be left stale
        flags = {n: p.requires_grad for n, p in session.model.named_parameters()}
        try:
            with quiet_peft():
                session.lora.add_weighted_adapter(adapters, weights, name, combination_type=combination_type)
        except (ValueError, TypeError) as exc:
            raise AdapterError(f"peft cannot combine {', '.join(adapters)}: {exc}") from None
        # peft freezes every parameter whose name merely *contains* the new name (`a` is in `default`)
        restore_flags(session.model, flags)
        errors = _errors(session, adapters, weights, name)
        session.records[name] = {
            "options": {"combined_from": adapters, "weights": weights, "combination_type": combination_type},
            "runs": [], "errors": errors,
        }
        if activate:
            switch.turn_on(session, name)
    session.notify("combine")
    return name
