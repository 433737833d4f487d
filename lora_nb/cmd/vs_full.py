"""``vs-full``: LoRA and full fine-tuning from the same weights on the same data, measured side by side."""

from __future__ import annotations

import inspect
from typing import Any

from ..core.analysis.vs_full import VsFullCallback, vs_full
from ..core.training.settings import TrainSettings
from .data_options import DATA_OPTIONS, data_objects
from .router import arg, verb

_DEFAULTS = {name: p.default for name, p in inspect.signature(vs_full).parameters.items()
             if p.default is not inspect.Parameter.empty}
_EXTRAS = ("grad_accum", "warmup", "schedule", "weight_decay", "max_grad_norm", "eval_every", "precision",
           "max_length")
_HELP = {
    "r": "LoRA rank", "alpha": "LoRA scaling numerator (ΔW scaled by alpha/r)",
    "targets": "modules LoRA adapts: auto | names | regex", "dropout": "LoRA dropout",
    "modules_to_save": "modules the LoRA arm trains in full too, e.g. a new head",
    "steps": "optimizer steps per arm", "lr_lora": "AdamW learning rate of the LoRA arm",
    "lr_full": "AdamW learning rate of the full fine-tune", "batch_size": "samples per step",
    "seed": "seed for shuffling and LoRA's init (both arms see the same batches)",
    "sizes": "training-set sizes for the data-size sweep, e.g. 25,50,100,200 (needs --eval)",
    "device": "auto | cpu | cuda[:N] | mps",
}


def _options():
    for name, text in _HELP.items():
        yield arg(f"--{name.replace('_', '-')}", dest=name, help=f"{text} (default: {_DEFAULTS[name]})")
    for name in _EXTRAS:
        text = TrainSettings.__dataclass_fields__[name].metadata["help"].replace("%", "%%")
        yield arg(f"--{name.replace('_', '-')}", dest=name, help=f"{text} (both arms)")



class ArmLines(VsFullCallback):
    """Terminal progress of ``vs_full``: one line per arm when it ends."""

    def __init__(self) -> None:
        self.arm, self.size = "", None

    def on_arm_begin(self, arm: str, size: int | None) -> None:
        self.arm, self.size = arm, size

    def on_train_end(self, run: Any) -> None:
        label = "LoRA" if self.arm == "lora" else "full fine-tuning"
        where = f" on {self.size} examples" if self.size is not None else ""
        losses = [r["loss"] for r in run.history]
        loss = f", loss {losses[0]:.4g} → {losses[-1]:.4g}" if losses else ""
        print(f"{label}{where}: {run.step} steps in {run.seconds:.1f} s{loss}", flush=True)


@verb(
    "vs-full", "LoRA and full fine-tuning from the same weights on the same data, measured side by side",
    *DATA_OPTIONS,
    *_options(),
    examples=["%lora vs-full model --data train --eval test",
              "%lora vs-full model --data train --eval test --r 4 --targets 0,2 --sizes 25,50,100,200",
              "%lora vs-full gpt --data texts --tokenizer tok --steps 100 --lr-lora 1e-3 --lr-full 1e-4"],
)
def _vs_full(ctx, args):
    model = ctx.model(args.model)
    objects = data_objects(ctx, args)
    options = {k: getattr(args, k) for k in (*_HELP, *_EXTRAS) if getattr(args, k) is not None}
    if ctx.widgets:
        from ..widgets.vs_full import VsFullLive

        view = VsFullLive(show_table=False)  # the returned result shows the table
        ctx.display(view)
    else:
        view = ArmLines()
    return vs_full(model, callbacks=[view], **objects, **options)
