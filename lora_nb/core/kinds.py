"""Checks that a user's object is the kind an option needs, made before it is used; and the one wrapper for
calls into the user's model, tokenizer or metric, whose exceptions become one line naming the call.

Kinds: tokenizer-like (callable, with ``decode``; ``save_pretrained`` when it is written to disk), callable
(a loss or a metric), tensor of token ids (integers, for a model that embeds tokens: ``get_input_embeddings()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import DataError, LoraNBError, ModelCallError, OptionError, a_kind, first_line


def check_tokenizer(obj: Any, what: str = "tokenizer", saves: bool = False) -> None:
    """Refuse ``obj`` (when not None) unless it is tokenizer-like: callable with ``decode`` (and ``save_pretrained``
    when ``saves``), as transformers' tokenizers are."""
    if obj is None:
        return
    needs = ["decode", *(["save_pretrained"] if saves else [])]
    missing = [name for name in needs if not callable(getattr(obj, name, None))]
    if not callable(obj) or missing or isinstance(obj, type):
        lacks = f" (no {missing[0]})" if missing and callable(obj) else ""
        raise OptionError(f"{what} must be a tokenizer (e.g. transformers.AutoTokenizer); got {a_kind(obj)}{lacks}")


def check_callable(obj: Any, what: str) -> None:
    """Refuse ``obj`` (when not None) unless it can be called (a function, or a loss module)."""
    if obj is not None and (not callable(obj) or isinstance(obj, type)):
        raise OptionError(f"{what} must be a function (or a loss module); got {a_kind(obj)}")


def embeds_tokens(model: nn.Module) -> bool:
    """True for a model whose inputs are token ids (it has an input embedding, as transformers' models do)."""
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        return False
    try:
        return isinstance(getter(), nn.Embedding)
    except (NotImplementedError, AttributeError):
        return False


def check_token_ids(model: nn.Module, inputs: Any, what: str) -> None:
    """Refuse float ``inputs`` (a tensor, or a dict's ``input_ids``) for a model that takes token ids."""
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    if isinstance(ids, torch.Tensor) and (ids.is_floating_point() or ids.is_complex()) and embeds_tokens(model):
        raise DataError(f"{what}: a {ids.dtype} tensor, but {type(model).__name__} takes token ids (integers); "
                        "give a LongTensor of token ids, or texts with a tokenizer")


def first_inputs(data: Any) -> Any:
    """The model inputs of the first item of training data in its common forms ((x, y) tensors, pairs, dicts),
    or None when they cannot be seen without running user code."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0]
    tensors = getattr(data, "tensors", None)  # a TensorDataset
    if isinstance(tensors, tuple) and tensors and isinstance(tensors[0], torch.Tensor):
        return tensors[0]
    if isinstance(data, (list, tuple)) and data:
        first = data[0]
        if isinstance(first, (tuple, list)) and len(first) == 2 and isinstance(first[0], torch.Tensor):
            return first[0]
        if isinstance(first, Mapping):
            return first
    return None


def check_data_kinds(model: nn.Module, data: Any, eval_data: Any, tokenizer: Any, loss_fn: Any,
                     loss_takes_model: bool = False) -> None:
    """The kinds of a run's objects, before a run starts: tokenizer-like, a callable loss, and token ids (not
    floats) for a model that embeds tokens (unless a ``loss_fn(model, batch)`` feeds the model itself)."""
    check_tokenizer(tokenizer)
    check_callable(loss_fn, "loss_fn")
    if not loss_takes_model:
        for what, part in (("the training data's inputs", data), ("the eval data's inputs", eval_data)):
            check_token_ids(model, first_inputs(part), what)


@contextlib.contextmanager
def user_call(what: str) -> Iterator[None]:
    """Turn an exception raised by user code inside the block into one line: ``{what} raised {type}: {message}``.

    Only around calls into the user's objects (model forward / generate, tokenizer, metric): a bug in lora_nb
    itself must keep its traceback. lora_nb's own errors and interrupts pass through.
    """
    try:
        yield
    except LoraNBError:
        raise
    except Exception as exc:
        raise ModelCallError(f"{what} raised {type(exc).__name__}: {first_line(exc)}") from None
