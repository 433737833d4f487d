"""The launched side of a ``script`` export (``lora_nb.export(model, path)``, written by ``core/export/script.py``):
``script_template.py`` is the ``train.py`` that export fills in, and ``launched_run`` is what that script calls
inside ``accelerate launch`` to train the model's active adapter with lora_nb's loop in each process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ... import registry

TEMPLATE = Path(__file__).with_name("script_template.py")


def launched_run(model: nn.Module, data: Any, eval_data: Any, tokenizer: Any, loss_fn: Any, settings: dict,
                 out: str | os.PathLike) -> None:
    """Inside ``accelerate launch``: train ``model``'s active adapter in this process with lora_nb's loop."""
    from ..data.batches import takes_model
    from ..run import prepare_run
    from ..settings import TrainSettings
    from .worker import Job, run_worker

    session = registry.require(model)
    prepared = prepare_run(session, data, eval_data, tokenizer, loss_fn, TrainSettings(**settings),
                    world=int(os.environ.get("WORLD_SIZE", "1")))
    run_worker(Job(session, prepared, not torch.cuda.is_available(), takes_model(loss_fn), str(out)))
