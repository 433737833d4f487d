"""The data options shared by verbs that train or export (``train``, ``vs-full``, ``export``): names → objects."""

from __future__ import annotations

from typing import Any

from .router import arg

_HELP = {"data": "variable with the training data", "eval_data": "variable with evaluation data",
         "tokenizer": "variable with a tokenizer (for text data)",
         "loss_fn": "variable with a loss: loss_fn(output, target) or loss_fn(model, batch)"}
_FLAGS = {"data": "--data", "eval_data": "--eval", "tokenizer": "--tokenizer", "loss_fn": "--loss"}


def data_options(remembered: bool = False) -> tuple:
    """``--data`` (required), ``--eval``, ``--tokenizer``, ``--loss``; ``remembered``: each defaults to the variable
    the model's last run used, so none is required."""
    note = " (default: the one the last run used)" if remembered else ""
    return tuple(arg(_FLAGS[key], dest=key, required=key == "data" and not remembered, help=text + note)
                 for key, text in _HELP.items())


DATA_OPTIONS = data_options()


def data_names(args) -> dict[str, str | None]:
    """The variable names given for data, eval data, tokenizer and loss, keyed as ``train`` takes them."""
    return {key: getattr(args, key) for key in _HELP}


def data_objects(ctx, args) -> dict[str, Any]:
    """The notebook objects behind ``data_names`` (one-line errors for typos)."""
    return {k: (ctx.lookup(v, k) if v else None) for k, v in data_names(args).items()}
