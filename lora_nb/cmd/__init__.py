"""The magic layer's verbs; importing this package registers every verb module in it."""

import importlib
import pkgutil

from ._router import VERBS, dispatch, help_text

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["VERBS", "dispatch", "help_text"]
