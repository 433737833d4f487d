"""Verbs that take a run beyond the notebook: ``export`` (a folder for ``accelerate launch``).

Multi-process training in the notebook is ``%lora train MODEL … --processes N`` (an option of train).
"""

from __future__ import annotations

from ..core import registry
from ..core.training.export import export
from .router import arg, verb


@verb(
    "export", "write the adapter, base model, data and last run's settings as a script for `accelerate launch`",
    arg("path", help="folder to write (train.py, adapter/, base/, data/)"),
    arg("--data", help="variable with the training data (default: the one the last %%lora train used)"),
    arg("--eval", dest="eval_data", help="variable with evaluation data (default: the last run's)"),
    arg("--tokenizer", help="variable with the tokenizer (default: the last run's)"),
    arg("--loss", help="variable with the loss (default: the last run's)"),
    examples=["%lora export model run1", "%lora export model /shared/runs/jargon --data big_texts"],
)
def _export(ctx, args):
    model = ctx.model(args.model)
    last = registry.require(model).last_train
    remembered = last.names if last is not None else {}
    names = {key: getattr(args, key) or remembered.get(key) for key in ("data", "eval_data", "tokenizer")}
    names["loss_fn"] = args.loss or remembered.get("loss_fn")
    objects = {key: (ctx.lookup(name) if name else None) for key, name in names.items()}
    return export(model, args.path, **objects)
