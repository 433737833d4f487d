"""Which form data comes in, so training and eval data of different forms are refused before a run starts.

lora_nb turns texts, chats, token ids and dicts of model inputs into batches of keyword inputs
(``model(**batch)``), and ``(input, target)`` pairs into ``model(input)`` against a target: a model can take
only one of the two. Training on one and evaluating on the other would fail at the first evaluation, deep in
the model's forward; ``check_same_form`` says so in one line first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ....errors import DataError
from .chat import is_chat_item

_FAMILY = {"texts": "inputs", "chats": "inputs", "dicts of model inputs": "inputs", "(input, target) pairs": "pairs"}


def form(data: Any) -> str | None:
    """``"texts"``, ``"chats"``, ``"dicts of model inputs"`` or ``"(input, target) pairs"``; None when the form
    cannot be seen without reading the data (a Dataset of another kind, a DataLoader, an iterable)."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return "(input, target) pairs"
    tensors = getattr(data, "tensors", None)  # a TensorDataset
    if isinstance(tensors, tuple) and len(tensors) == 2:
        return "(input, target) pairs"
    if type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "column_names"):
        return "dicts of model inputs"  # 🤗 datasets: a text column or token columns
    if not isinstance(data, (list, tuple)) or not data:
        return None
    first = data[0]
    if isinstance(first, str):
        return "texts"
    if is_chat_item(first):
        return "chats"
    if isinstance(first, Mapping):
        return "dicts of model inputs"
    if isinstance(first, (tuple, list)) and len(first) == 2:
        return "(input, target) pairs"
    return None


def check_same_form(data: Any, eval_data: Any, loss_fn: Any = None) -> None:
    """A one-line ``DataError`` when the eval data's form cannot go through the model the way the training
    data's does (pairs against texts, chats or dicts). A ``loss_fn`` reads batches itself: not checked."""
    if eval_data is None or loss_fn is not None:
        return
    train, held_out = form(data), form(eval_data)
    if train is None or held_out is None or _FAMILY[train] == _FAMILY[held_out]:
        return
    raise DataError(f"the eval data is {held_out} but the training data is {train}: the model takes only one of "
                    "the two, so give eval data of the same kind as the training data")
