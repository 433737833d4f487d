"""Model copies lora_nb trains outside any session (``Bare``), and measuring one after training: mean loss over
one pass of some data, and accuracy where the model is a classifier."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...training.data.batches import count, takes_model, to_device
from ...training.precision import choose_precision
from ...training.run import prepare_run
from ...training.settings import TrainSettings

if TYPE_CHECKING:  # pragma: no cover
    from ...training.run import TrainRun


@dataclass(eq=False)
class Bare:
    """What ``launch`` needs of a session, for a model copy lora_nb does not manage (vs_full's full arm, the
    short runs)."""

    model: nn.Module
    lock: Any = field(default_factory=threading.RLock)
    run: TrainRun | None = None
    last_train: Any = None

    def ensure_idle(self, action: str) -> None:
        """A private copy has no other run to wait for."""

    def notify(self, what: str) -> None:
        """Nobody watches a private copy."""


def evaluate(model: nn.Module, data: Any, shared: Any, settings: TrainSettings,
             device: torch.device) -> tuple[float, float | None]:
    """Mean loss over one pass of ``data`` (eval mode, no gradients) and accuracy for classifiers (else None).

    ``shared``: what reads the data, ``tokenizer`` and ``loss_fn`` (as for ``lora_nb.train``)."""
    batches = prepare_run(Bare(model), data, None, shared.tokenizer, shared.loss_fn, settings, params=[]).batches
    autocast = choose_precision(device, settings.precision).autocast()
    total, seen, hits, judged = 0.0, 0, 0, 0
    mode = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            for batch in batches.loader:
                n, _ = count(batch)
                batch = to_device(batch, device)
                total, seen = total + float(batches.loss(model, batch)) * n, seen + n
                right = correct(model, batch, shared.loss_fn)
                hits, judged = hits + (right or 0), judged + (n if right is not None else 0)
    finally:
        model.train(mode)
    return total / max(seen, 1), (hits / judged if judged and judged == seen else None)


def correct(model: nn.Module, batch: Any, loss_fn: Any) -> int | None:
    """Correct argmax predictions of a classifier batch (integer class targets), else None."""
    if takes_model(loss_fn):
        return None
    if isinstance(batch, Mapping):
        target, call = batch.get("labels"), (lambda: model(**batch))
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, target = batch
        call = (lambda: model(**inputs)) if isinstance(inputs, Mapping) else (lambda: model(inputs))
    else:
        return None
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.dim() != 1:
        return None
    out = call()
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or len(logits) != len(target):
        return None
    return int((logits.argmax(-1) == target).sum())
