"""lora_nb: LoRA adapters in the notebook — attach, train live, look inside, toggle.

In a notebook: ``%load_ext lora_nb`` then ``%lora?``. From Python, the same features::

    import lora_nb
    lora_nb.attach(model, r=8, targets="auto")
    run = lora_nb.train(model, data, steps=100)
"""

from __future__ import annotations

from .core import (
    AttachOptions, ModelStatus, attach, delete_adapter, detach, disable, enable, status,
)
from .errors import LoraNBError

__version__ = "0.1.0"

delete = delete_adapter

__all__ = [
    "AttachOptions", "LoraNBError", "ModelStatus", "attach", "delete", "detach", "disable", "enable",
    "load_ipython_extension", "status", "unload_ipython_extension",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext lora_nb``: register the ``%lora`` / ``%%lora`` magics."""
    from .magics import LoraMagics

    ipython.register_magics(LoraMagics)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext lora_nb``: remove the magics again."""
    ipython.magics_manager.magics["line"].pop("lora", None)
    ipython.magics_manager.magics["cell"].pop("lora", None)
