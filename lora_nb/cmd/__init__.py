"""The magic layer's verbs. Each module below registers its verbs on import, in the order `%lora?` lists them."""
# isort: skip_file

from . import attach, train, plan, inspect, analysis, adapters, vs_full, short_runs, loss_mask, dashboard, export  # noqa: F401  (registers the verbs)
from .router import VERBS, dispatch, help_text

__all__ = ["VERBS", "dispatch", "help_text"]
