"""``train``: train a model's active LoRA adapter (in the background inside Jupyter) and get its ``TrainRun``."""

from __future__ import annotations

import contextlib
from typing import Any

from ...errors import OptionError
from .. import registry
from ..paths import output_folder
from .callbacks import Callback
from .data.batches import takes_model
from .device import resolve_device
from .memory.plan import MemoryPlan, make_plan
from .memory.recompute import check_grad_checkpointing
from .precision import choose_precision
from .processes.driver import launch_processes
from .reporting import console_unless_watched
from .run import TrainRun, launch, prepare_run
from .settings import TrainSettings, check_training_options


def train(model: Any, data: Any, eval_data: Any = None, tokenizer: Any = None, loss_fn: Any = None,
          steps: int | None = None, epochs: float | None = None, lr: float = 2e-4, batch_size: int = 8,
          grad_accum: int = 1, device: str = "auto", background: bool | None = None,
          callbacks: list[Callback] | None = None, *, names: dict[str, str] | None = None,
          seed: int | None = 0, warmup: float = 0.0, schedule: str = "cosine", max_grad_norm: float | None = 1.0,
          eval_every: int | None = None, weight_decay: float = 0.0, max_length: int = 512,
          split_by_length: bool = True, group_by_length: bool = False, precision: str = "auto", processes: int = 1,
          save_every: int | None = None, save_dir: str | None = None, keep: int | None = None,
          resume: str | None = None, resume_weights_only: bool = False, patience: int | None = None,
          min_delta: float = 0.0, restore_best: bool = False,
          sample_prompts: list | None = None, sample_every: int | None = None, sample_tokens: int = 32,
          grad_checkpointing: bool = False, lr_ratio: float | None = None, spectra_every: int | None = None,
          **unknown: Any) -> TrainRun:
    """Train ``model``'s active adapter on ``data``; returns the ``TrainRun``.

    ``background=None``: a background thread inside a Jupyter kernel, blocking elsewhere. ``callbacks`` watch
    the run (``Callback``; None outside a notebook: progress lines on stdout, ``[]``: nothing printed).
    ``names``: the notebook names of the data (``{"data": "texts", ...}``), remembered with the settings in
    ``session.last_train``. Every other option is a ``TrainSettings`` field (same name,
    default and checks; ``%lora train`` takes them as ``--batch-size``, …; ``help(lora_nb.TrainSettings)``
    says what each does). An unknown keyword is an ``OptionError`` that names it.
    """
    check_training_options(unknown)
    callbacks = console_unless_watched(callbacks, background)  # outside a notebook: progress lines
    given = locals()
    settings = TrainSettings(**{name: given[name] for name in TrainSettings.__dataclass_fields__})
    session = registry.require(model)
    session.ensure_idle("start another training run")
    if settings.save_dir is not None:  # checked before the run starts, not at its first checkpoint
        output_folder(settings.save_dir, "save_dir (--save-dir)")
    if settings.processes > 1 and settings.uses_long_run_options:
        raise OptionError("checkpoints, resume, early stopping, samples, LoRA+ and gradient checkpointing train in "
                          "one process; drop `processes=…` or those options")
    if settings.processes > 1:  # data-parallel over processes (processes/driver.py); it decides the devices
        return launch_processes(session, settings, data, eval_data, tokenizer, loss_fn, background, callbacks, names)
    prepared = prepare_run(session, data, eval_data, tokenizer, loss_fn, settings)
    return launch(session, session.active, prepared, background, callbacks, takes_model(loss_fn), names)


def plan_memory(model: Any, data: Any, tokenizer: Any = None, loss_fn: Any = None, batch_size: int = 8,
                device: str = "auto", **extras: Any) -> MemoryPlan:
    """The memory plan of ``train(model, data, ...)`` with these settings: measured, nothing trained or changed."""
    check_training_options(extras)
    settings = TrainSettings(batch_size=batch_size, device=device, **extras)
    session = registry.require(model)
    session.ensure_idle("measure a memory plan")
    if settings.grad_checkpointing:
        check_grad_checkpointing(session.model)
    prepared = prepare_run(session, data, None, tokenizer, loss_fn, settings)
    target = resolve_device(settings.device)
    here = prepared.params[0].device
    precision = choose_precision(target, settings.precision)
    autocast = precision.autocast if here.type == target.type else contextlib.nullcontext
    batches = prepared.batches
    return make_plan(session.model, prepared.params, batches, settings, target, autocast, batches.loss)
