"""``%lora watch TRAINER``: lora_nb's live dashboard on a ``transformers`` / TRL trainer's runs (``--train``: start
``trainer.train()`` in the background now, with Stop and Pause)."""

from __future__ import annotations

from ..widgets.watch import TrainerWatch, fit
from .router import UI, arg, verb


@verb(
    "watch", "show lora_nb's live dashboard when a Trainer / TRL trainer trains (--train: train it in the background)",
    arg("trainer", help="notebook variable holding the trainer (Trainer, SFTTrainer, DPOTrainer, GRPOTrainer …)"),
    arg("--train", action="store_true", help="run trainer.train() now in a background thread (Stop and Pause work)"),
    UI,
    examples=["%lora watch trainer", "%lora watch trainer --train"],
    model=False,
)
def _watch(ctx, args) -> TrainerWatch | None:
    trainer = ctx.lookup(args.trainer, "trainer")
    ui = ctx.view_mode(args)
    if args.train:
        return fit(trainer, ui=ui)  # shown by the cell's output: from the cell's own thread
    TrainerWatch(trainer, ui=ui)  # the trainer holds its callback: the dashboard shows in the cell that trains
    print(f"watching `{args.trainer}`: the dashboard shows when `{args.trainer}.train()` runs "
          f"(`view = lora_nb.watch({args.trainer})` keeps the view: view.history, view.stop())")
    return None
