"""Which modules an adapter goes on: ``auto``, explicit names, or a regex.

Everything here is checked *before* peft injects anything, because peft raises
mid-injection on an unsupported module and leaves earlier layers wrapped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from ...errors import TargetError, did_you_mean, preview

_NAMES = re.compile(r"^[\w.]+$")


def conv1d_type():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return ()
    return (Conv1D,)


def supported_types() -> tuple[type, ...]:
    """Module types peft's LoRA adapts exactly (bit-exact when disabled)."""
    types: tuple[type, ...] = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, *conv1d_type())
    try:  # quantized bases, where bitsandbytes is installed
        import bitsandbytes as bnb  # type: ignore

        types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except Exception:
        pass
    return types


def _auto_types() -> tuple[type, ...]:
    return (nn.Linear, nn.Conv1d, nn.Conv2d, *conv1d_type())


def named_modules(model: nn.Module):
    """``model.named_modules()`` as the user built it: a LoRA wrapper shows as its base layer."""
    from peft.tuners.lora import LoraLayer

    inside: str | None = None
    for name, module in model.named_modules():
        if inside is not None and name.startswith(inside):
            continue
        if isinstance(module, LoraLayer):
            inside = name + "."
            yield name, module.get_base_layer()
        else:
            yield name, module


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
        raise TargetError(f"{option} `{pattern}` is not a valid regex: {exc}") from None


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
                    "pass --targets with module names"
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
        elif isinstance(module, nn.MultiheadAttention):
            bad.append(f"{name} (nn.MultiheadAttention: peft's LoRA on it is not bit-exact)")
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
            "transformers Conv1D"
        )
    return list(leaves)


def target_regex(names: Sequence[str]) -> str:
    """A regex that peft's ``re.fullmatch`` matches against exactly these qualified names."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"
