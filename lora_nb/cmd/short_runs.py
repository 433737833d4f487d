"""Verbs that repeat short runs from the same start: ``lr-sweep`` (LoRA's lr vs full fine-tuning's) and
``placement`` (attention-only vs all layers at equal parameters)."""

from __future__ import annotations

from ..core.analysis.shortrun.lr_sweep import SweepOptions, lr_sweep
from ..core.analysis.shortrun.placement import PlacementOptions, placement
from ..core.training.settings import TrainSettings
from .data_options import DATA_OPTIONS, data_objects
from .router import UI, given, options_of, verb, with_settings

_NOTEBOOK = {"device": "device"}  # options whose default is a notebook setting (`%config LoraMagics`)
_EVERY_RUN = ("warmup", "schedule", "weight_decay", "max_grad_norm", "max_length", "grad_accum", "precision")


def _sweep(ctx, args, kind: str, cls: type, run):
    model = ctx.model(args.model)
    objects = data_objects(ctx, args)
    options = with_settings({**given(args, cls), **given(args, TrainSettings)}, ctx.settings, _NOTEBOOK)
    mode = ctx.view_mode(args)
    from ..widgets.short_runs import ShortRunsLive

    view = ShortRunsLive(kind, ui=mode, interval=max(0.5, 1 / ctx.refresh_rate))
    ctx.display(view)
    return run(model, callbacks=[view], **objects, **options)


@verb(
    "lr-sweep", "short runs over a log grid of learning rates: loss against lr, the best lr (with --vs-full: "
                "LoRA's and full fine-tuning's, and their ratio)",
    *DATA_OPTIONS,
    *options_of(SweepOptions, given_only=True, notebook=_NOTEBOOK),
    *options_of(TrainSettings, only=_EVERY_RUN, note=" (every run)", given_only=True),
    UI,
    examples=["%lora lr-sweep model --data chats --tokenizer tok --vs-full",
              "%lora lr-sweep model --data train --eval test --lrs 1e-4:1e-1:7 --steps 30",
              "%lora lr-sweep model --data texts --tokenizer tok --lrs 3e-4,1e-3,3e-3 --r 16"],
    mutates="nothing",
)
def _lr_sweep(ctx, args):
    return _sweep(ctx, args, "lr", SweepOptions, lr_sweep)


@verb(
    "placement", "LoRA on attention only vs on all linear layers (MLP included) at equal parameter counts, "
                 "same data, steps and lr",
    *DATA_OPTIONS,
    *options_of(PlacementOptions, given_only=True, notebook=_NOTEBOOK),
    *options_of(TrainSettings, only=_EVERY_RUN, note=" (both runs)", given_only=True),
    UI,
    examples=["%lora placement model --data chats --tokenizer tok --lr 1e-3",
              "%lora placement model --data train --eval test --r 4 --steps 60"],
    mutates="nothing",
)
def _placement(ctx, args):
    return _sweep(ctx, args, "placement", PlacementOptions, placement)
