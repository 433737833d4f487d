"""Which notebook variable owns a module: a verb given a part of an adapted model names the model instead.

``model.transformer`` (a dotted path into a model with LoRA adapters) or a variable that holds a part of one is
refused in one line naming the owner, so no verb changes the owner's LoRA layers behind its session's back.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core import registry


def _adapted(obj: Any) -> nn.Module | None:
    """The user's model inside ``obj`` when ``obj`` holds LoRA adapters (a session, or a PeftModel), else None."""
    from peft import PeftModel

    if isinstance(obj, PeftModel):
        return obj.base_model.model
    if isinstance(obj, nn.Module) and registry.find(obj) is not None:
        return obj
    return None


def _inside(obj: Any, model: nn.Module) -> bool:
    return obj is not model and any(m is obj for m in model.modules())


def owner(namespace: dict[str, Any], path: str, obj: Any, lookup) -> str | None:
    """The name of an adapted model that ``obj`` (found at ``path``) is a part of, or None.

    The path's own prefixes come first (``model`` for ``model.transformer``); a variable with no session of its
    own is also looked for among the namespace's adapted models."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        model = _adapted(lookup(prefix))
        if model is not None and _inside(obj, model):
            return prefix
    if _adapted(obj) is not None:
        return None
    for name, value in list(namespace.items()):
        if name.startswith("_") or value is obj:
            continue
        model = _adapted(value)
        if model is not None and _inside(obj, model):
            return name
    return None
