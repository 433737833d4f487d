"""lora_nb: LoRA adapters in the notebook — attach, train live, look inside, toggle.

In a notebook: ``%load_ext lora_nb`` then ``%lora?``. From Python, the same features::

    import lora_nb
    lora_nb.attach(model, r=8, targets="auto")
    run = lora_nb.train(model, data, steps=100)

Public names are imported lazily, so ``import lora_nb`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import LoraNBError
from .version import __version__

# public name -> "module:attribute"; one table, read by __getattr__ and __dir__
_EXPORTS = {
    "attach": "lora_nb.core.adapters.attach:attach",
    "detach": "lora_nb.core.adapters.attach:detach",
    "enable": "lora_nb.core.adapters.switch:enable",
    "disable": "lora_nb.core.adapters.switch:disable",
    "delete": "lora_nb.core.adapters.attach:delete_adapter",
    "status": "lora_nb.core.adapters.status:status",
    "AttachOptions": "lora_nb.core.adapters.options:AttachOptions",
    "ModelStatus": "lora_nb.core.adapters.status:ModelStatus",
    "Callback": "lora_nb.core.training.callbacks:Callback",
    "train": "lora_nb.core.training.train:train",
    "plan_memory": "lora_nb.core.training.train:plan_memory",
    "TrainRun": "lora_nb.core.training.run:TrainRun",
    "TrainSettings": "lora_nb.core.training.settings:TrainSettings",
    "ConsoleReporter": "lora_nb.core.training.reporting:ConsoleReporter",
    "LiveDashboard": "lora_nb.widgets.live:LiveDashboard",
    "watch": "lora_nb.widgets.watch:watch",
    "fit": "lora_nb.widgets.watch:fit",
    "callback": "lora_nb.widgets.watch:callback",
    "spectra": "lora_nb.core.analysis.learned.spectra:spectra",
    "similarity": "lora_nb.core.analysis.learned.spectra:similarity",
    "interference": "lora_nb.core.analysis.learned.interference:interference",
    "amplification": "lora_nb.core.analysis.learned.spectra:amplification",
    "intruders": "lora_nb.core.analysis.learned.spectra:intruders",
    "weights": "lora_nb.core.analysis.learned.weights:weights",
    "advise": "lora_nb.core.analysis.learned.advisor:advise",
    "spectra_history": "lora_nb.core.analysis.learned.history:spectra_history",
    "merge": "lora_nb.core.adapters.merge:merge",
    "unmerge": "lora_nb.core.adapters.merge:unmerge",
    "save": "lora_nb.core.adapters.io:save",
    "load": "lora_nb.core.adapters.io:load",
    "combine": "lora_nb.core.adapters.combine:combine",
    "strength": "lora_nb.core.adapters.switch:strength",
    "set_strength": "lora_nb.core.adapters.switch:set_strength",
    "compare": "lora_nb.core.analysis.outputs.compare:compare",
    "vs_full": "lora_nb.core.analysis.shortrun.vs_full:vs_full",
    "VsFullResult": "lora_nb.core.analysis.shortrun.vs_full:VsFullResult",
    "VsFullCallback": "lora_nb.core.analysis.shortrun.vs_full:VsFullCallback",
    "ShortRunCallback": "lora_nb.core.analysis.shortrun.hooks:ShortRunCallback",
    "lr_sweep": "lora_nb.core.analysis.shortrun.lr_sweep:lr_sweep",
    "placement": "lora_nb.core.analysis.shortrun.placement:placement",
    "loss_mask": "lora_nb.core.training.data.loss_mask:loss_mask",
    "export": "lora_nb.core.export.api:export",
    "check": "lora_nb.core.export.api:check",
    "smollm2": "lora_nb.datasets:smollm2",
    "smollm2_folder": "lora_nb.datasets:smollm2_folder",
    "rotten_tomatoes": "lora_nb.datasets:rotten_tomatoes",
    "minilm_folder": "lora_nb.datasets:minilm_folder",
}

__all__ = ["LoraNBError", "__version__", "load_ipython_extension", "unload_ipython_extension", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'lora_nb' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def load_ipython_extension(ipython) -> None:
    """``%load_ext lora_nb``: register the ``%lora`` / ``%%lora`` magics, their settings and tab completion."""
    from .magics import register

    register(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext lora_nb``: remove the magics, their settings and their completer again."""
    from .magics import unregister

    unregister(ipython)
