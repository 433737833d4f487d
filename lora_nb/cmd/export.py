"""Verbs that take a run beyond the notebook: ``export`` (a folder for ``accelerate launch``).

Multi-process training in the notebook is ``%lora train MODEL … --processes N`` (an option of train).
"""

from __future__ import annotations

from ..core import registry
from ..core.training.processes.export import export
from .data_options import data_names, data_options
from .router import arg, verb


@verb(
    "export", "write the adapter, base model, data and last run's settings as a script for `accelerate launch`",
    arg("path", help="folder to write (train.py, adapter/, base/, data/)"),
    *data_options(remembered=True),
    examples=["%lora export model run1", "%lora export model /data/runs/jargon --data big_texts"],
)
def _export(ctx, args):
    model = ctx.model(args.model)
    last = registry.require(model).last_train
    remembered = last.names if last is not None else {}
    names = {key: name or remembered.get(key) for key, name in data_names(args).items()}
    objects = {key: (ctx.lookup(name) if name else None) for key, name in names.items()}
    return export(model, args.path, **objects)
