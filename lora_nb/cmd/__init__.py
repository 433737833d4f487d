"""The magic layer's verbs; importing this package registers every verb module in it."""

import importlib
import pkgutil

from .router import VERBS, dispatch, help_text

# Verb modules in the order `%lora?` lists them (the contract's order); any other module follows.
_ORDER = ["basic", "train", "inspect", "adapters", "classroom", "scale"]
_found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
for _name in sorted(_found, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["VERBS", "dispatch", "help_text"]
