"""``%lora plan``: what training would hold in memory, whether it fits the device, and what to change if not."""

from __future__ import annotations

from ..core.training.settings import TrainSettings
from ..core.training.train import plan_memory
from .data_options import data_objects, data_options
from .messages import as_magic
from .router import VERBS, Text, options_of, verb, with_settings

PLANNED = ("batch_size", "grad_accum", "max_length", "device", "precision", "grad_checkpointing")
_NOTEBOOK = {"device": "device"}  # as for train: the device defaults to the notebook setting (`%config LoraMagics`)


@verb(
    "plan", "memory plan of a training run: weights, gradients, AdamW state, measured activations; fits or not",
    *[option for option in data_options() if option[1]["dest"] != "eval_data"],
    *options_of(TrainSettings, only=PLANNED, notebook=_NOTEBOOK),
    examples=["%lora plan model --data texts --tokenizer tok --batch-size 16",
              "%lora plan model --data texts --tokenizer tok --batch-size 64 --grad-checkpointing"],
    mutates="model",  # it runs the model to measure its activations
)
def _plan(ctx, args):
    model = ctx.model(args.model)
    args.eval_data = None
    objects = data_objects(ctx, args)
    settings = with_settings({name: getattr(args, name) for name in PLANNED}, ctx.settings, _NOTEBOOK)
    plan = plan_memory(model, objects["data"], tokenizer=objects["tokenizer"], loss_fn=objects["loss_fn"], **settings)
    return Text(as_magic(plan.table(), VERBS))  # its tips as options
