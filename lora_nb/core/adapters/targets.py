"""Which modules an adapter goes on: ``auto``, explicit names, or a regex.

Everything here is checked *before* peft injects anything, because peft raises
mid-injection on an unsupported module and leaves earlier layers wrapped.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

from torch import nn

from ...errors import LoraNBWarning, TargetError, did_you_mean, preview

_NAMES = re.compile(r"^[\w.]+$")


def conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return ()
    return (Conv1D,)


def supported_types() -> tuple[type, ...]:
    """Module types LoRA adapts exactly (bit-exact when disabled)."""
    types: tuple[type, ...] = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention,
                               *conv1d_type())
    try:  # quantized bases, where bitsandbytes is installed
        import bitsandbytes as bnb  # type: ignore

        types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except Exception:
        pass
    return types


def _auto_types() -> tuple[type, ...]:
    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.MultiheadAttention, *conv1d_type())


def named_modules(model: nn.Module):
    """``model.named_modules()`` as the user built it: a LoRA wrapper shows as its base layer, and modules
    inside it (e.g. a MultiheadAttention's ``out_proj``, itself wrapped) under their own names."""
    from peft.tuners.lora import LoraLayer

    seen: set[int] = set()

    def walk(prefix: str, module: nn.Module):
        if isinstance(module, LoraLayer):
            module = module.get_base_layer()
        if id(module) in seen:
            return
        seen.add(id(module))
        yield prefix, module
        for child_name, child in module.named_children():
            yield from walk(f"{prefix}.{child_name}" if prefix else child_name, child)

    yield from walk("", model)


def _is_leaf_candidate(module: nn.Module) -> bool:
    return isinstance(module, supported_types())


def _head_prefix(model: nn.Module) -> str | None:
    """For a transformers model with a task head, the prefix of its base model."""
    prefix = getattr(model, "base_model_prefix", None)
    if prefix and isinstance(getattr(model, prefix, None), nn.Module):
        return prefix + "."
    return None


def auto_targets(model: nn.Module) -> list[str]:
    """Every linear/conv layer, except a transformers model's task head and output embeddings."""
    prefix = _head_prefix(model)
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = []
    for name, module in named_modules(model):
        if not name or not isinstance(module, _auto_types()) or module is out_emb:
            continue
        if prefix is not None and not name.startswith(prefix):
            continue
        names.append(name)
    return names


def _short_names(model: nn.Module) -> list[str]:
    """Distinct last components of adaptable modules: the names users type."""
    seen: dict[str, None] = {}
    for name, module in named_modules(model):
        if name and _is_leaf_candidate(module):
            seen[name.rsplit(".", 1)[-1]] = None
    return list(seen)


def match_names(model: nn.Module, keys: Sequence[str]) -> list[str]:
    all_names = [n for n, _ in named_modules(model) if n]
    matched: dict[str, None] = {}
    for key in keys:
        hits = [n for n in all_names if n == key or n.endswith("." + key)]
        if not hits:
            raise TargetError(
                f"target `{key}` matches no module{did_you_mean(key, _short_names(model))} "
                f"(candidates: {preview(_short_names(model), 12)})"
            )
        matched.update(dict.fromkeys(hits))
    return list(matched)


def compile_regex(pattern: str, option: str) -> re.Pattern:
    """``pattern`` compiled, or a one-line error naming the ``option`` it came from."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise TargetError(f"`{option}={pattern!r}` is not a valid regex: {exc}") from None


def _match_regex(model: nn.Module, pattern: str) -> list[str]:
    """Adaptable layers whose qualified name the regex finds (containers and dropouts are skipped)."""
    rx = compile_regex(pattern, "targets")
    named = [(n, m) for n, m in named_modules(model) if n and rx.search(n)]
    hits = [n for n, m in named if _is_leaf_candidate(m)]
    if not hits:
        found = f" (it matches only {preview([f'{n} ({type(m).__name__})' for n, m in named], 3)})" if named else ""
        raise TargetError(
            f"targets regex `{pattern}` matches no adaptable layer{found}; "
            f"candidates: {preview(_short_names(model), 12)}"
        )
    return hits


def resolve_targets(model: nn.Module, targets: str | Sequence[str] = "auto") -> list[str]:
    """Qualified names of the modules to adapt, checked to be adaptable.

    ``"auto"``; a comma-separated string or list of names (a name matches a module whose
    qualified name is it or ends with ``.name``); or a regex searched in qualified names.
    """
    if isinstance(targets, str):
        text = targets.strip()
        if text in ("", "auto"):
            names = auto_targets(model)
            if not names:
                raise TargetError(
                    f"targets=auto found no linear or conv layer in {type(model).__name__}; "
                    "pass `targets=…` with module names"
                )
        elif all(_NAMES.match(part.strip()) for part in text.split(",")):
            names = match_names(model, [p.strip() for p in text.split(",") if p.strip()])
        else:
            names = _match_regex(model, text)
    else:
        names = match_names(model, [str(t) for t in targets])
    modules = dict(named_modules(model))
    # A name may match a container (e.g. `attention`): adapt the supported layers inside it.
    leaves: dict[str, None] = {}
    bad = []
    for name in names:
        module = modules[name]
        if _is_leaf_candidate(module):
            leaves[name] = None
        elif not list(module.children()):
            bad.append(f"{name} ({type(module).__name__})")
        else:
            inner = [n for n, m in modules.items() if n.startswith(name + ".") and _is_leaf_candidate(m)]
            if not inner:
                bad.append(f"{name} ({type(module).__name__}, with no linear/conv/embedding layer inside)")
            leaves.update(dict.fromkeys(inner))
    if bad:
        raise TargetError(
            "LoRA cannot adapt " + preview(bad, 4) + "; supported: Linear, Conv1d/2d/3d, Embedding, "
            "MultiheadAttention, transformers Conv1D"
        )
    named = set(names) if targets not in ("", "auto") else set()
    return _exact_only(modules, _without_out_proj(modules, list(leaves)), named)


def _without_out_proj(modules: dict[str, nn.Module], leaves: list[str]) -> list[str]:
    """Drop the ``out_proj`` of an adapted MultiheadAttention (its LoRA layer covers it); refuse it alone."""
    owners = {f"{n}.out_proj": n for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)}
    alone = [n for n in leaves if n in owners and owners[n] not in leaves]
    if alone:
        owner = owners[alone[0]]
        raise TargetError(f"`{alone[0]}` is the output projection of nn.MultiheadAttention `{owner}`, which reads "
                          f"its weight directly, so a LoRA on it alone would never run; target `{owner}` instead "
                          "(adapts its in_proj and out_proj)")
    return [n for n in leaves if n not in owners]


def _exact_only(modules: dict[str, nn.Module], leaves: list[str], named: set[str]) -> list[str]:
    """``leaves`` without the layers LoRA cannot adapt exactly (some Linear/Conv subclasses, MultiheadAttention
    with separate q/k/v weights): an error for a layer named explicitly, one note for those found by ``auto``
    or inside a named container."""
    from .custom_layers import unsupported_reason

    reasons = {n: r for n in leaves if (r := unsupported_reason(modules[n]))}
    named_bad = [n for n in reasons if n in named]
    if named_bad:
        n = named_bad[0]
        raise TargetError(f"LoRA cannot adapt `{n}` ({type(modules[n]).__name__}) exactly: {reasons[n]}")
    if reasons:
        classes = dict.fromkeys(type(modules[n]).__name__ for n in reasons)
        warnings.warn(f"skipped {len(reasons)} layer(s) of class {', '.join(classes)}: "
                      f"{next(iter(reasons.values()))}, so LoRA on it would not be exact", LoraNBWarning, stacklevel=4)
    kept = [n for n in leaves if n not in reasons]
    if not kept:
        raise TargetError(f"no layer left to adapt: {len(reasons)} layer(s) skipped ({next(iter(reasons.values()))})")
    return kept


def target_regex(names: Sequence[str]) -> str:
    """A regex that peft's ``re.fullmatch`` matches against exactly these qualified names."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"
