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

__version__ = "0.1.0"

# public name -> "module:attribute"; one table, read by __getattr__ and __dir__
_EXPORTS = {
    "attach": "lora_nb.core.attach:attach",
    "detach": "lora_nb.core.attach:detach",
    "enable": "lora_nb.core.attach:enable",
    "disable": "lora_nb.core.attach:disable",
    "delete": "lora_nb.core.attach:delete_adapter",
    "status": "lora_nb.core.status:status",
    "AttachOptions": "lora_nb.core.options:AttachOptions",
    "ModelStatus": "lora_nb.core.status:ModelStatus",
    "Callback": "lora_nb.core.callbacks:Callback",
    "train": "lora_nb.core.train:train",
    "TrainRun": "lora_nb.core.train:TrainRun",
    "TrainSettings": "lora_nb.core._settings:TrainSettings",
    "ConsoleReporter": "lora_nb.core.reporting:ConsoleReporter",
    "LiveDashboard": "lora_nb.widgets.live:LiveDashboard",
    "spectra": "lora_nb.core.spectra:spectra",
    "similarity": "lora_nb.core.spectra:similarity",
    "amplification": "lora_nb.core.spectra:amplification",
    "intruders": "lora_nb.core.spectra:intruders",
    "weights": "lora_nb.core.weights:weights",
    "merge": "lora_nb.core.merge:merge",
    "unmerge": "lora_nb.core.merge:unmerge",
    "save": "lora_nb.core.io:save",
    "load": "lora_nb.core.io:load",
    "combine": "lora_nb.core.combine:combine",
    "strength": "lora_nb.core.strength:strength",
    "set_strength": "lora_nb.core.strength:set_strength",
    "compare": "lora_nb.core.compare:compare",
    "vs_full": "lora_nb.core.vs_full:vs_full",
    "VsFullResult": "lora_nb.core.vs_full:VsFullResult",
    "VsFullCallback": "lora_nb.core.vs_full:VsFullCallback",
    "export": "lora_nb.core.export:export",
}

__all__ = ["LoraNBError", "load_ipython_extension", "unload_ipython_extension", *_EXPORTS]


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
    """``%load_ext lora_nb``: register the ``%lora`` / ``%%lora`` magics."""
    from .magics import LoraMagics

    ipython.register_magics(LoraMagics)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext lora_nb``: remove the magics again."""
    ipython.magics_manager.magics["line"].pop("lora", None)
    ipython.magics_manager.magics["cell"].pop("lora", None)
