"""LoRA on ``nn.Linear`` / ``nn.Conv1d/2d/3d`` layers whose input peft's factors would not see as the weight does.

peft builds a conv layer's LoRA factors with the base layer's own class (``type(base)(in, r, k, …)``),
which fails for a subclass whose constructor takes other arguments, and it feeds the factors the raw
input, which is wrong for a subclass whose forward changes what its weight sees (e.g. "same" padding:
``F.pad`` then a conv with ``padding=0``). Here such layers get LoRA layers whose factors are plain
``nn.Conv2d`` / ``nn.Linear`` modules, and — for a subclass with its own forward — whose input factor
``A`` runs the subclass's own forward with ``A``'s weight in place of the base weight (no bias, no hooks).
The factors then see exactly the input the base weight sees, so ``base(x) + s·B(A(x))`` equals the
subclass's forward with ``W + ΔW``: merging is consistent and spectra of ``ΔW = s·B·A`` are those of the
update. This holds when the forward is linear in ``self.weight``; :func:`unsupported_reason` checks that
on a small probe input, and layers that fail it (e.g. a forward that standardizes its weight) are not
adapted. Plain convolutions are routed the same way when peft's factors would ignore how the layer reads
its input: a dilation (peft's ``A`` has none, so its output does not even fit) or a ``padding_mode`` other
than zeros (peft's ``A`` zero-pads). (peft is imported here: import this module only where peft is needed.)
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft.tuners.lora import layer as lora
from torch import nn
from torch.func import functional_call

from . import mha

PLAIN = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def plain_class(module: nn.Module) -> type | None:
    """The torch class a user-defined subclass of Linear/ConvNd extends; ``None`` for anything else."""
    cls = type(module)
    if cls in PLAIN or cls.__module__.split(".")[0] in ("torch", "bitsandbytes"):
        return None  # torch's own subclasses (MultiheadAttention's out_proj) and quantized layers: peft's path
    return torch_class(module)


def torch_class(module: nn.Module) -> type | None:
    """``nn.Linear`` / ``nn.Conv1d/2d/3d`` when ``module`` is one (or a subclass of one)."""
    return next((p for p in PLAIN if isinstance(module, p)), None)


def needs_route(module: nn.Module) -> bool:
    """True when ``A`` must run through the layer's own forward to see the input its weight sees."""
    if own_forward(module):
        return True
    conv = isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups == 1
    return conv and (any(d != 1 for d in module.dilation) or module.padding_mode != "zeros")


def own_forward(module: nn.Module) -> bool:
    """True when the subclass replaces the forward (or the conv call) of its torch class."""
    plain = plain_class(module)
    names = ("forward", "_conv_forward") if plain is not nn.Linear else ("forward",)
    return plain is not None and any(getattr(type(module), n) is not getattr(plain, n) for n in names)


class _Detour(nn.Module):
    """Runs ``base``'s own forward without its hooks (``functional_call`` swaps the weight in)."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return type(self.base).forward(self.base, x)


def run_with_weight(base: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``base``'s forward on ``x`` with ``weight`` for its weight and no bias; ``base`` is not changed."""
    params: dict[str, torch.Tensor | None] = {"base.weight": weight}
    if getattr(base, "bias", None) is not None:
        params["base.bias"] = None
    return functional_call(_Detour(base), params, (x,))


def _probe_input(base: nn.Module, g: torch.Generator) -> torch.Tensor:
    if isinstance(base, nn.Linear):
        shape = [2, base.in_features]
    else:
        shape = [1, base.in_channels] + [max(8, d * (k - 1) + 1 + s)
                                         for k, d, s in zip(base.kernel_size, base.dilation, base.stride)]
    return torch.randn(shape, generator=g, device=base.weight.device).to(base.weight.dtype)


def unsupported_reason(module: nn.Module) -> str | None:
    """Why LoRA cannot adapt ``module`` exactly, or ``None`` when it can (see the module docstring)."""
    if isinstance(module, nn.MultiheadAttention):
        return mha.unsupported_reason(module)
    if not own_forward(module):
        return None
    if getattr(module, "groups", 1) > 1:
        return "a grouped convolution with its own forward"
    if module.weight.is_meta:
        return "its own forward cannot be checked on meta weights"
    g = torch.Generator(device=module.weight.device).manual_seed(0)
    w1, w2 = (torch.randn(module.weight.shape, generator=g, device=module.weight.device).to(module.weight.dtype)
              for _ in range(2))
    try:
        with torch.no_grad():
            x = _probe_input(module, g)
            y1, y2, y12 = (run_with_weight(module, w, x) for w in (w1, w2, w1 + w2))
            y_r = run_with_weight(module, w1[:1], x)  # one output channel, as a rank-1 factor would be
    except Exception as exc:
        return f"its own forward fails on a probe input ({type(exc).__name__})"
    tol = {"rtol": 1e-3, "atol": 1e-4} if module.weight.dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    if not torch.allclose(y12, y1 + y2, **tol) or not torch.allclose(y_r.float(), y1[:, :1].float(), **tol):
        return "its own forward is not linear in its weight (e.g. it standardizes the weight)"
    return None


@contextmanager
def as_plain(module: nn.Module):
    """Let a subclass look like its torch class for a moment (peft builds factors with ``type(base)``)."""
    cls, plain = type(module), plain_class(module)
    if plain is None:
        yield
        return
    module.__class__ = plain
    try:
        yield
    finally:
        module.__class__ = cls


class _Routed:
    """A factor ``A`` that computes through its base layer's own forward (set as ``route``, not a child)."""

    route: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_with_weight(self.route, self.weight, x)


class RoutedLinear(_Routed, nn.Linear):
    """``nn.Linear`` factor routed through a Linear subclass's forward."""


class RoutedConv1d(_Routed, nn.Conv1d):
    """``nn.Conv1d`` factor routed through a Conv1d subclass's forward."""


class RoutedConv2d(_Routed, nn.Conv2d):
    """``nn.Conv2d`` factor routed through a Conv2d subclass's forward."""


class RoutedConv3d(_Routed, nn.Conv3d):
    """``nn.Conv3d`` factor routed through a Conv3d subclass's forward."""


ROUTED = {nn.Linear: RoutedLinear, nn.Conv1d: RoutedConv1d, nn.Conv2d: RoutedConv2d, nn.Conv3d: RoutedConv3d}


class _ExactLayer:
    """Builds the factors with the torch class, and routes ``A`` through the layer's forward where needed."""

    def update_layer(self, adapter_name: str, *args, **kwargs) -> None:
        base = self.get_base_layer()
        with as_plain(base):
            super().update_layer(adapter_name, *args, **kwargs)
        if needs_route(base) and adapter_name in self.lora_A:
            factor = self.lora_A[adapter_name]
            factor.__class__ = ROUTED[torch_class(base)]
            object.__setattr__(factor, "route", base)  # a plain attribute: no module cycle


class ExactLinear(_ExactLayer, lora.Linear):
    """peft's LoRA Linear, for a Linear subclass."""


class ExactConv1d(_ExactLayer, lora.Conv1d):
    """peft's LoRA Conv1d, for a Conv1d subclass or a conv whose input peft's factors would misread."""


class ExactConv2d(_ExactLayer, lora.Conv2d):
    """peft's LoRA Conv2d, for a Conv2d subclass or a conv whose input peft's factors would misread."""


class ExactConv3d(_ExactLayer, lora.Conv3d):
    """peft's LoRA Conv3d, for a Conv3d subclass or a conv whose input peft's factors would misread."""


LORA_CLASSES = {nn.Linear: ExactLinear, nn.Conv1d: ExactConv1d, nn.Conv2d: ExactConv2d, nn.Conv3d: ExactConv3d}


def register(config, modules) -> None:
    """In peft ``config``, map the Linear/ConvNd subclasses, the convs whose input peft's factors would misread
    and the MultiheadAttention layers among ``modules`` to lora_nb's LoRA classes (by class, as peft maps)."""
    mapping = {type(m): LORA_CLASSES[torch_class(m)] for m in modules if plain_class(m) or needs_route(m)}
    mapping.update({type(m): mha.ExactMultiheadAttention for m in modules if isinstance(m, nn.MultiheadAttention)})
    if mapping:
        config._register_custom_module(mapping)  # peft's (experimental) hook for custom LoRA layers
