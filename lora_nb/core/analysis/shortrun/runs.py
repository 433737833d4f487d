"""Short training runs from the same start, on copies: what the learning-rate sweep and the placement test repeat.

Each run trains a fresh copy of the model's base weights (``vs_full.base_copy``: LoRA layers the model has are
stripped from the copy), either with a new LoRA adapter or every weight (full fine-tuning), through the same
training loop as ``lora_nb.train`` and ``vs_full``. The model itself is never touched, so its weights, flags and
adapters are exactly as before, whatever the runs do. A run that diverges (NaN/inf loss) is a measured outcome
(``state == "failed"``, loss ``nan``), not an error; one stopped by the user (``run.stop()``, Ctrl-C) says so.
"""

from __future__ import annotations

import math
import types
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from ....errors import OptionError
from ...adapters.attach import attach
from ...adapters.options import AttachOptions
from ...training.callbacks import Callback
from ...training.data.batches import takes_model
from ...training.data.forms import check_same_form
from ...training.device import place_model, resolve_device
from ...training.run import TrainRun, launch, prepare_run, trainable_parameters
from ...training.settings import TrainSettings
from .evaluation import Bare, evaluate
from .vs_full import base_copy

ADAPTER = "probe"  # the adapter's name on a LoRA copy


@dataclass
class ShortRun:
    """One short run: its settings in a few words, how it ended and what it measured."""

    arm: str  # "lora" | "full" (or the caller's label)
    lr: float
    params: int  # trainable parameters
    state: str  # "finished" | "stopped" | "failed"
    losses: list[float] = field(default_factory=list)  # training loss per step
    eval_loss: float | None = None  # mean loss over the held-out data after training
    seconds: float = 0.0
    message: str = ""
    supervised_tokens: int = 0  # loss-bearing tokens the run saw (token data), else 0

    @property
    def final_loss(self) -> float:
        """Held-out loss when measured, else the mean training loss over the last quarter of the steps;
        ``nan`` for a run that diverged or was stopped."""
        if self.state != "finished" or not self.losses:
            return math.nan
        if self.eval_loss is not None:
            return self.eval_loss
        tail = self.losses[-max(1, len(self.losses) // 4):]
        return sum(tail) / len(tail)


@dataclass
class Recipe:
    """What every run of a series shares: the data and how to read it, the training settings, the watchers."""

    data: Any
    eval_data: Any
    tokenizer: Any
    loss_fn: Any
    settings: TrainSettings
    callbacks: list[Callback] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_same_form(self.data, self.eval_data, self.loss_fn)  # one line before any run, not a TypeError after


def short_run(model: nn.Module, recipe: Recipe, lr: float, lora: AttachOptions | None,
              label: str | None = None) -> ShortRun:
    """Train a copy of ``model``'s base weights at ``lr``: a new LoRA adapter (``lora``) or every weight (None).

    ``label``: the run's ``arm`` (default "lora" or "full"), also the name its watchers see as ``run.adapter``.
    """
    arm = label or ("full" if lora is None else "lora")
    settings = TrainSettings(**{**vars(recipe.settings), "lr": lr})
    clone = base_copy(model)
    device = resolve_device(settings.device)
    place_model(clone, device)
    if lora is None:
        holder = Bare(clone)
        params = [p for p in clone.parameters() if p.is_floating_point()]
    else:
        if settings.seed is not None:
            torch.manual_seed(settings.seed)  # the adapter's random init: the same in every run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # attach's notes were the user's to see once, not per run
            holder = attach(clone, **{**vars(lora), "name": ADAPTER})
        params = trainable_parameters(holder)
    prepared = prepare_run(holder, recipe.data, None, recipe.tokenizer, recipe.loss_fn, settings, params=params)
    counter = SupervisedTokens()
    run = launch(holder, arm, prepared, background=False, callbacks=[counter, *recipe.callbacks],
                 custom_loss=takes_model(recipe.loss_fn))
    result = ShortRun(arm, lr, sum(p.numel() for p in params), run.state, [r["loss"] for r in run.history],
                      seconds=run.seconds, message=run.message, supervised_tokens=counter.seen)
    if run.state == "finished" and recipe.eval_data is not None:
        how = types.SimpleNamespace(tokenizer=recipe.tokenizer, loss_fn=recipe.loss_fn)
        result.eval_loss = evaluate(clone, recipe.eval_data, how, settings, device)[0]
    if not math.isfinite(result.losses[-1] if result.losses else math.nan) and run.state == "finished":
        result.state = "failed"
    return result


class SupervisedTokens(Callback):
    """Counts the loss-bearing tokens a run trains on (from each step's record, see the training loop)."""

    def __init__(self) -> None:
        self.seen = 0

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        self.seen = int(record.get("supervised_tokens", self.seen))


# training settings a sweep of short runs sets itself for every run
OWN_TRAIN = {"lr", "steps", "batch_size", "seed", "device", "spectra_every", "processes"}


def split_options(cls: type, options: dict[str, Any], verb: str, own_hint: str) -> tuple[Any, dict[str, Any]]:
    """``(cls(**its options), the other TrainSettings options)`` of a short-runs verb; one line when the others name
    a setting the verb sets itself (``own_hint`` says which of its own options to use instead)."""
    own = {f.name for f in fields(cls)}
    opts = cls(**{k: v for k, v in options.items() if k in own})
    extras = {k: v for k, v in options.items() if k not in own}
    fixed = sorted(set(extras) & OWN_TRAIN)
    if fixed:
        raise OptionError(f"{verb} sets {', '.join(fixed)} itself (use {own_hint})")
    return opts, extras
