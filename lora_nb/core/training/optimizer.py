"""The optimizer of a run: AdamW over the trained parameters, or LoRA+ (B's learning rate = ratio × A's).

LoRA+ groups come from ``peft.optimizers.create_loraplus_optimizer``: A matrices at ``lr``, B matrices
(and 1-D parameters) at ``lr_ratio × lr``, embedding adapters at ``lr``. The loop's schedule scales
every group's learning rate by the same factor each step, so each group keeps its ratio
(``group_scales``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...errors import TrainingError


def make_optimizer(model: torch.nn.Module, params: list[torch.nn.Parameter], settings: Any) -> torch.optim.Optimizer:
    """AdamW for ``params`` (which alone require grad now), in LoRA+ groups when ``settings.lr_ratio`` is set."""
    if settings.lr_ratio is None:
        return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    from peft.optimizers import create_loraplus_optimizer

    opt = create_loraplus_optimizer(model, torch.optim.AdamW, lr=settings.lr, loraplus_lr_ratio=settings.lr_ratio,
                                    loraplus_weight_decay=settings.weight_decay, loraplus_lr_embedding=settings.lr)
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    if grouped != {id(p) for p in params}:
        raise TrainingError("LoRA+ (lr_ratio) groups an adapter's A and B matrices; this run trains other "
                            "parameters too")
    groups = [{"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]}
              for g in opt.param_groups if g["params"]]
    return torch.optim.AdamW(groups, lr=settings.lr)


def group_scales(optimizer: torch.optim.Optimizer, lr: float) -> list[float]:
    """Each parameter group's learning rate as a multiple of the run's ``lr``."""
    return [group["lr"] / lr for group in optimizer.param_groups]


def lr_factor(settings: Any, step: int, total: int) -> float:
    """The schedule's factor on ``settings.lr`` at optimizer step ``step`` (0-based) of ``total``: warmup, then
    cosine or linear decay (or constant)."""
    warm = settings.warmup_steps(total)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if settings.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress if settings.schedule == "linear" else 1.0
