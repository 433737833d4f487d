"""``vs-full``: LoRA and full fine-tuning from the same weights on the same data, measured side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.analysis.vs_full import VsFullCallback, VsFullOptions, vs_full
from ..core.training.settings import TrainSettings
from .data_options import DATA_OPTIONS, data_objects
from .router import UI, given, options_of, verb, with_settings

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun

_NOTEBOOK = {"device": "device"}  # vs-full's options whose default is a notebook setting (`%config LoraMagics`)
_BOTH_ARMS = ("grad_accum", "warmup", "schedule", "weight_decay", "max_grad_norm", "eval_every", "precision",
              "max_length")


class ArmLines(VsFullCallback):
    """Terminal progress of ``vs_full``: one line per arm when it ends."""

    def __init__(self) -> None:
        self.arm, self.size = "", None

    def on_arm_begin(self, arm: str, size: int | None) -> None:
        self.arm, self.size = arm, size

    def on_train_end(self, run: TrainRun) -> None:
        label = "LoRA" if self.arm == "lora" else "full fine-tuning"
        where = f" on {self.size} examples" if self.size is not None else ""
        losses = [r["loss"] for r in run.history]
        loss = f", loss {losses[0]:.4g} → {losses[-1]:.4g}" if losses else ""
        print(f"{label}{where}: {run.step} steps in {run.seconds:.1f} s{loss}", flush=True)


@verb(
    "vs-full", "LoRA and full fine-tuning from the same weights on the same data, measured side by side",
    *DATA_OPTIONS,
    *options_of(VsFullOptions, given_only=True, notebook=_NOTEBOOK),
    *options_of(TrainSettings, only=_BOTH_ARMS, note=" (both arms)", given_only=True),
    UI,
    examples=["%lora vs-full model --data train --eval test",
              "%lora vs-full model --data train --eval test --r 4 --targets 0,2 --sizes 25,50,100,200",
              "%lora vs-full gpt --data texts --tokenizer tok --steps 100 --lr-lora 1e-3 --lr-full 1e-4"],
)
def _vs_full(ctx, args):
    model = ctx.model(args.model)
    objects = data_objects(ctx, args)
    options = with_settings({**given(args, VsFullOptions), **given(args, TrainSettings)}, ctx.settings, _NOTEBOOK)
    mode = ctx.view_mode(args)
    if mode != "text":
        from ..widgets.vs_full import VsFullLive

        view = VsFullLive(show_table=False, interval=max(0.5, 1 / ctx.refresh_rate), ui=mode)  # result shows the table
        ctx.display(view)
    else:
        view = ArmLines()
    return vs_full(model, callbacks=[view], **objects, **options)
