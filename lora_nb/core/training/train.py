"""``train``: train a model's active LoRA adapter (in the background inside Jupyter) and get its ``TrainRun``."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import fields
from typing import Any

import torch

from ...errors import OptionError
from .. import registry
from .callbacks import Callback
from .data.batches import takes_model
from .device import resolve_device
from .loop import uses_bf16
from .memory.plan import MemoryPlan, make_plan
from .memory.recompute import check_grad_checkpointing
from .processes.driver import launch_processes
from .run import TrainRun, launch, plan_run
from .settings import TrainSettings


def train(model: Any, data: Any, eval_data: Any = None, tokenizer: Any = None, loss_fn: Any = None,
          steps: int | None = None, epochs: float | None = None, lr: float = 2e-4, batch_size: int = 8,
          grad_accum: int = 1, device: str = "auto", background: bool | None = None,
          callbacks: list[Callback] | None = None, **extras: Any) -> TrainRun:
    """Train ``model``'s active adapter on ``data``; returns the ``TrainRun``.

    ``background=None``: a background thread inside a Jupyter kernel, blocking elsewhere.
    ``extras``: seed, warmup, schedule, max_grad_norm, eval_every, weight_decay, max_length, precision
    (see ``TrainSettings``), and ``names``: the notebook names of the data (``{"data": "texts", ...}``),
    remembered with the settings in ``session.last_train``.
    """
    names = extras.pop("names", None)
    unknown = set(extras) - {f.name for f in fields(TrainSettings)}
    if unknown:
        raise OptionError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    settings = TrainSettings(steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                             device=device, **extras)
    session = registry.require(model)
    session.ensure_idle("start another training run")
    if settings.processes > 1 and settings.uses_long_run_options:
        raise OptionError("checkpoints, resume, early stopping, samples, LoRA+ and gradient checkpointing train in "
                          "one process; drop `processes=…` or those options")
    if settings.processes > 1:  # data-parallel over processes (processes.py); it decides the devices
        return launch_processes(session, settings, data, eval_data, tokenizer, loss_fn, background, callbacks, names)
    plan = plan_run(session, data, eval_data, tokenizer, loss_fn, settings)
    return launch(session, session.active, plan, background, callbacks, takes_model(loss_fn), names)


def plan_memory(model: Any, data: Any, tokenizer: Any = None, loss_fn: Any = None, batch_size: int = 8,
                device: str = "auto", **extras: Any) -> MemoryPlan:
    """The memory plan of ``train(model, data, ...)`` with these settings: measured, nothing trained or changed."""
    unknown = set(extras) - {f.name for f in fields(TrainSettings)}
    if unknown:
        raise OptionError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    settings = TrainSettings(batch_size=batch_size, device=device, **extras)
    session = registry.require(model)
    session.ensure_idle("measure a memory plan")
    if settings.grad_checkpointing:
        check_grad_checkpointing(session.model)
    plan = plan_run(session, data, None, tokenizer, loss_fn, settings)
    target = resolve_device(settings.device)
    here = plan.params[0].device
    autocast = contextlib.nullcontext
    if uses_bf16(target, settings.precision) and here.type == target.type:
        autocast = functools.partial(torch.autocast, here.type, dtype=torch.bfloat16)
    return make_plan(session.model, plan.params, plan.batches, settings, target, autocast, plan.batches.loss)
