"""The magic layer's verbs. Each module below registers its verbs on import; ``ORDER`` is the verb table: the order
``%lora?``, tab completion and the unknown-verb message list them in, following a model's life — put an adapter
on, train it, look inside, combine and keep it, take it off."""

from . import (  # noqa: F401  (registers the verbs)
    adapters,
    analysis,
    attach,
    dashboard,
    export,
    inspect,
    loss_mask,
    plan,
    short_runs,
    train,
    vs_full,
    watch,
)
from .router import VERBS, dispatch, help_text, order_verbs

ORDER = (
    "attach", "status", "on", "off", "toggle",  # put an adapter on, see it, switch it
    "data", "plan", "train", "pause", "resume", "stop", "dashboard", "watch",  # check the data, train it
    "lr-sweep", "placement",  # short runs: which learning rate, which layers
    "weights", "spectrum", "history", "advise", "intruders", "similarity", "compare", "vs-full",  # look inside
    "merge", "unmerge", "combine", "save", "load", "check", "export",  # combine, keep, take elsewhere
    "delete", "detach",  # take it off
)
order_verbs(ORDER)

__all__ = ["ORDER", "VERBS", "dispatch", "help_text"]
