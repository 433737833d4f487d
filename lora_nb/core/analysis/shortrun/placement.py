"""``placement``: LoRA on the attention layers only, against LoRA on every linear layer, at equal parameter counts.

LoRA Without Regret (Schulman et al., Thinking Machines, 2025) found attention-only LoRA worse than LoRA on all
layers (MLP included) even when its rank is raised until both train as many parameters. This runs that test on
the user's model: the all-layers adapter gets rank ``r``; the attention-only adapter the integer rank whose
parameter count comes closest to it (a rank-r adapter on a module with ``in`` inputs and ``out`` outputs has
r·(in + out) parameters). Both train copies of the base weights with the same data, steps, seed and lr, and the
same alpha (so ΔW is scaled by alpha/r: the 1/r scaling under which the best lr barely depends on the rank).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ....errors import OptionError
from ... import registry
from ...adapters.options import AttachOptions, as_number
from ...adapters.targets import resolve_targets
from ...kinds import check_callable, check_tokenizer
from ...training.callbacks import Callback
from ...training.settings import TrainSettings
from .hooks import listeners
from .lr_sweep import PointLines
from .progress import lines_unless_watched
from .runs import Recipe, ShortRun, short_run, split_options
from .vs_full import base_copy

ARMS = ("attention", "all")
LABELS = {"attention": "attention only", "all": "all linear layers"}
_ATTENTION = re.compile(r"attn|attention", re.IGNORECASE)


@dataclass
class PlacementOptions:
    """How ``placement`` trains its two adapters."""

    r: int = field(default=8, metadata={"help": "rank of the all-layers adapter (attention-only gets the rank "
                                                "that matches its parameter count)"})
    alpha: float = field(default=32, metadata={"help": "scaling numerator for both adapters (ΔW scaled by alpha/r)"})
    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate of both (pick it with %lora lr-sweep)"})
    steps: int = field(default=30, metadata={"help": "optimizer steps per adapter"})
    batch_size: int = field(default=8, metadata={"help": "samples per step"})
    seed: int = field(default=0, metadata={"help": "seed for shuffling and LoRA's init (both see the same batches)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA, then MPS, then CPU) | cpu | cuda[:N] | mps"})

    def __post_init__(self) -> None:
        for name, kind in (("r", int), ("alpha", float), ("lr", float), ("steps", int), ("batch_size", int),
                           ("seed", int)):
            setattr(self, name, as_number(name, getattr(self, name), kind))


@dataclass
class PlacedArm:
    """One adapter of the comparison: where it went, its rank and its run."""

    name: str  # "attention" | "all"
    modules: list[str]
    rank: int
    run: ShortRun

    @property
    def params(self) -> int:
        return self.run.params


@dataclass
class PlacementResult:
    """Attention-only against all-layers LoRA at (nearly) equal trainable parameters."""

    arms: dict[str, PlacedArm]
    settings: dict[str, Any]
    measure: str

    def winner(self) -> str | None:
        """The arm with the lower final loss (None if a run diverged)."""
        losses = {k: a.run.final_loss for k, a in self.arms.items()}
        if any(v != v for v in losses.values()):
            return None
        return min(losses, key=losses.get)

    def headline(self) -> str:
        a, b = self.arms["attention"], self.arms["all"]
        sides = [f"{LABELS[x.name]} r={x.rank} ({x.params:,} parameters): {self.measure} {x.run.final_loss:.4f}"
                 for x in (a, b)]
        won = self.winner()
        verdict = f"lower: {LABELS[won]}" if won else "a run diverged"
        return "; ".join(sides) + f" — {verdict} (the paper: all layers win at equal parameters)"

    def __repr__(self) -> str:
        return f"placement at equal parameters ({self.settings['steps']} steps, lr {self.settings['lr']:g}): " + \
            self.headline()

    def _repr_html_(self) -> str:
        import html

        return f"<p><b>Placement at equal parameters</b>: {html.escape(self.headline())}</p>"


def split_targets(model: nn.Module) -> tuple[list[str], list[str], dict[str, int]]:
    """``auto`` targets of ``model``'s base weights split into attention and the rest, and in + out per module."""
    names = resolve_targets(model, "auto")
    sizes = {n: _in_plus_out(model.get_submodule(n)) for n in names}
    attention = [n for n in names if _ATTENTION.search(n)]
    if not attention or len(attention) == len(names):
        raise OptionError("placement needs attention layers (names with `attn` or `attention`) and other linear "
                          f"layers; this model's targets are {', '.join(names[:6])}{'…' if len(names) > 6 else ''}")
    return attention, names, sizes


def _in_plus_out(module: nn.Module) -> int:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features) + int(module.out_features)
    shape = module.weight.shape  # Conv1D stores (in, out)
    return int(shape[0]) + int(shape[1])


def matched_rank(r: int, all_size: int, attention_size: int) -> int:
    """The attention-only rank whose r·Σ(in + out) comes closest to the all-layers adapter's."""
    target = r * all_size
    return max(1, min((max(1, target // attention_size), target // attention_size + 1),
                      key=lambda k: abs(k * attention_size - target)))


def placement(model: Any, data: Any, eval_data: Any = None, *, tokenizer: Any = None, loss_fn: Any = None,
              callbacks: Sequence[Callback] | None = None, **options: Any) -> PlacementResult:
    """Attention-only LoRA against all-linear-layers LoRA at equal parameter counts, same data, steps and lr.

    ``options``: those of ``PlacementOptions`` (``r``, ``alpha``, ``lr``, ``steps``, ``batch_size``, ``seed``,
    ``device``) and other ``TrainSettings`` for both runs. The model is left exactly as it was (both adapters
    train copies of its base weights). A ``ShortRunCallback`` hears each run begin (``arm`` is "attention" or
    "all") and end; None outside a notebook prints a line per run and progress while it trains, ``[]`` nothing.
    """
    model = registry.as_module(model)
    opts, extras = split_options(PlacementOptions, options, "placement", "lr=, steps=, batch_size=, seed=, device=")
    check_tokenizer(tokenizer)
    check_callable(loss_fn, "loss_fn")
    settings = TrainSettings(steps=opts.steps, batch_size=opts.batch_size, seed=opts.seed, device=opts.device,
                             lr=opts.lr, spectra_every=0, **extras)
    attention, every, sizes = split_targets(base_copy(model))
    ranks = {"all": opts.r, "attention": matched_rank(opts.r, sum(sizes.values()),
                                                      sum(sizes[n] for n in attention))}
    modules = {"attention": attention, "all": every}
    lines = lines_unless_watched(callbacks, lambda: PointLines(LABELS))
    recipe = Recipe(data, eval_data, tokenizer, loss_fn, settings, lines)
    watchers = listeners(recipe.callbacks)
    arms = {}
    for index, arm in enumerate(ARMS):
        for cb in watchers:
            cb.on_run_begin(arm, index, len(ARMS), lr=opts.lr)
        lora = AttachOptions(r=ranks[arm], alpha=opts.alpha, targets=modules[arm])
        arms[arm] = PlacedArm(arm, modules[arm], ranks[arm], short_run(model, recipe, opts.lr, lora, label=arm))
        for cb in watchers:
            cb.on_run_end(arms[arm].run)
    measure = "eval loss" if eval_data is not None else "final train loss"
    result = PlacementResult(arms, dict(steps=opts.steps, lr=opts.lr, alpha=opts.alpha, batch_size=opts.batch_size),
                             measure)
    for cb in watchers:
        cb.on_result(result)
    return result
