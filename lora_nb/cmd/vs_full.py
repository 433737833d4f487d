"""``vs-full``: LoRA and full fine-tuning from the same weights on the same data, measured side by side."""

from __future__ import annotations

from ..core.analysis.shortrun.hooks import ShortRunCallback
from ..core.analysis.shortrun.vs_full import ArmLines, VsFullOptions, vs_full
from ..core.training.settings import TrainSettings
from ..frontend import pick
from .data_options import DATA_OPTIONS, data_objects
from .router import UI, given, options_of, verb, with_settings

_NOTEBOOK = {"device": "device"}  # vs-full's options whose default is a notebook setting (`%config LoraMagics`)
_BOTH_ARMS = ("grad_accum", "warmup", "schedule", "weight_decay", "max_grad_norm", "eval_every", "precision",
              "max_length")


class PlanLine(ShortRunCallback):
    """Beside a view: the one line that says what both arms train (a new adapter with its own settings)."""

    def on_begin(self, plan: str) -> None:
        print(plan, flush=True)


@verb(
    "vs-full", "LoRA and full fine-tuning from the same weights on the same data, measured side by side",
    *DATA_OPTIONS,
    *options_of(VsFullOptions, given_only=True, notebook=_NOTEBOOK),
    *options_of(TrainSettings, only=_BOTH_ARMS, note=" (both arms)", given_only=True),
    UI,
    examples=["%lora vs-full model --data train --eval test",
              "%lora vs-full model --data train --eval test --r 4 --targets 0,2 --sizes 25,50,100,200",
              "%lora vs-full gpt --data texts --tokenizer tok --steps 100 --lr-lora 1e-3 --lr-full 1e-4"],
    mutates="nothing",
)
def _vs_full(ctx, args):
    model = ctx.model(args.model)
    objects = data_objects(ctx, args)
    options = with_settings({**given(args, VsFullOptions), **given(args, TrainSettings)}, ctx.settings, _NOTEBOOK)
    watchers = pick({"static": _live_view, "text": _arm_lines}, ctx.view_mode(args))(ctx, args)
    return vs_full(model, callbacks=watchers, **objects, **options)


def _live_view(ctx, args) -> list[ShortRunCallback]:
    """The live curves (widgets or a picture updated in place), displayed now, with the line saying what both
    arms train."""
    from ..widgets.vs_full import VsFullLive

    view = VsFullLive(show_table=False, interval=max(0.5, 1 / ctx.refresh_rate), ui=ctx.view_mode(args))
    ctx.display(view)  # the result shows the table
    return [PlanLine(), view]


def _arm_lines(ctx, args) -> list[ShortRunCallback]:
    """A printed line per arm (a terminal, a script)."""
    return [ArmLines()]
