"""Gradient (activation) checkpointing for a run: recompute each layer's activations in backward.

transformers models only: ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` on
older versions) with ``use_reentrant=False``, plus input embeddings that require grad so a frozen
base still passes gradients to the adapter. ``enable`` returns a function that puts the model back.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ....errors import OptionError
from ..callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from ..run import TrainRun


def supports_grad_checkpointing(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "supports_gradient_checkpointing", False))


def check_grad_checkpointing(model: torch.nn.Module) -> None:
    if not supports_grad_checkpointing(model):
        raise OptionError(f"gradient checkpointing needs a transformers model that supports it; a "
                          f"{type(model).__name__} does not")


def is_checkpointing(model: torch.nn.Module) -> bool:
    if hasattr(type(model), "is_activation_checkpointing"):  # the newer name; the older one warns there
        return bool(model.is_activation_checkpointing)
    return bool(getattr(model, "is_gradient_checkpointing", False))


def enable(model: Any) -> Callable[[], None]:
    """Turn gradient checkpointing on (non-reentrant); returns the function that undoes exactly this."""
    if is_checkpointing(model):
        return lambda: None
    kwargs = {"use_reentrant": False}
    had_hooks = bool(getattr(model, "_require_grads_hooks", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the older name is deprecated in newer transformers
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if not getattr(model, "_require_grads_hooks", None):  # older transformers leave this to the caller
        model.enable_input_require_grads()

    def undo() -> None:
        if not had_hooks:
            model.disable_input_require_grads()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if hasattr(model, "activation_checkpointing_disable"):
                model.activation_checkpointing_disable()
            else:
                model.gradient_checkpointing_disable()

    return undo


class GradCheckpointing(Callback):
    """Gradient checkpointing on for the run's length."""

    def __init__(self, model: Any) -> None:
        self.model, self.undo = model, None

    def on_train_begin(self, run: TrainRun) -> None:
        self.undo = enable(self.model)

    def on_train_end(self, run: TrainRun) -> None:
        if self.undo is not None:
            self.undo()
            self.undo = None
