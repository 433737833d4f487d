"""The data options shared by verbs that train (``train``, ``vs-full``): variable names → objects."""

from __future__ import annotations

from typing import Any

from .router import arg

DATA_OPTIONS = (
    arg("--data", required=True, help="variable with the training data"),
    arg("--eval", dest="eval_data", help="variable with evaluation data"),
    arg("--tokenizer", help="variable with a tokenizer (for text data)"),
    arg("--loss", help="variable with a loss: loss_fn(output, target) or loss_fn(model, batch)"),
)


def data_names(args) -> dict[str, str | None]:
    """The variable names given for data, eval data, tokenizer and loss, keyed as ``train`` takes them."""
    return {"data": args.data, "eval_data": args.eval_data, "tokenizer": args.tokenizer, "loss_fn": args.loss}


def data_objects(ctx, args) -> dict[str, Any]:
    """The notebook objects behind ``data_names`` (one-line errors for typos)."""
    return {k: (ctx.lookup(v) if v else None) for k, v in data_names(args).items()}
