"""The magic layer's verbs; importing this package registers them all."""

from . import basic  # noqa: F401  (registers verbs)
from ._router import VERBS, dispatch, help_text

__all__ = ["VERBS", "dispatch", "help_text"]
