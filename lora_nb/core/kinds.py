"""What counts as a model, a tokenizer, training data or a function, asked here by every layer (a run's checks and
Tab completion alike), made before an object is used; and the one wrapper for calls into the user's model,
tokenizer or metric, whose exceptions become one line naming the call.

Kinds: a model (a torch module with parameters), tokenizer-like (callable, with ``decode``; ``save_pretrained`` when
it is written to disk), training data (a list or tuple, a torch or Hugging Face dataset, a DataLoader; the kinds
passed by mistake, a DataFrame, a dict, a str, a tensor, ..., are refused with what to pass instead), a function (a
loss or a metric: callable, and no class, model or tokenizer), tensor of token ids (integers, for a model that
embeds tokens: ``get_input_embeddings()``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ..errors import DataError, LoraNBError, ModelCallError, NotAModelError, OptionError, a_kind, first_line


def is_model(obj: Any) -> bool:
    """A torch module with parameters (a bare loss module is not a model)."""
    return isinstance(obj, nn.Module) and next(obj.parameters(), None) is not None


def check_model(obj: Any, what: str) -> None:
    """Refuse ``obj`` unless :func:`is_model`; ``what`` names it (`` `model` ``)."""
    if not isinstance(obj, nn.Module):
        raise NotAModelError(f"{what} is {a_kind(obj)}, not a torch.nn.Module")
    if not is_model(obj):
        raise NotAModelError(f"{what} is {a_kind(obj)} with no parameters, not a model")


def is_tokenizer(obj: Any, saves: bool = False) -> bool:
    """Tokenizer-like: an object (not a class) called on text, with ``decode`` (and ``save_pretrained`` when
    ``saves``), as transformers' tokenizers are."""
    needs = ["decode", *(["save_pretrained"] if saves else [])]
    return callable(obj) and not isinstance(obj, type) and all(callable(getattr(obj, n, None)) for n in needs)


def check_tokenizer(obj: Any, what: str = "tokenizer", saves: bool = False) -> None:
    """Refuse ``obj`` (when not None) unless :func:`is_tokenizer`, saying what to pass instead."""
    if obj is None or is_tokenizer(obj, saves):
        return
    missing = [n for n in ("decode", "save_pretrained") if not callable(getattr(obj, n, None))]
    lacks = f" (no {missing[0]})" if missing and callable(obj) and not isinstance(obj, type) else ""
    hint = ""
    if isinstance(obj, str):
        hint = (": a name is not loaded here; pass a variable holding a tokenizer, e.g. "
                f"`tok = AutoTokenizer.from_pretrained({obj!r})`")
    elif type(obj).__module__.split(".")[0] == "tokenizers":
        hint = ": wrap it as `PreTrainedTokenizerFast(tokenizer_object=tok)` (from transformers)"
    raise OptionError(f"{what} must be a tokenizer (e.g. transformers.AutoTokenizer); got {a_kind(obj)}{lacks}{hint}")


def is_callable(obj: Any) -> bool:
    """A function (or a loss module): callable, and no class, Python module, model or tokenizer."""
    return (callable(obj) and not isinstance(obj, (type, ModuleType)) and not is_model(obj)
            and not is_tokenizer(obj))


def check_callable(obj: Any, what: str) -> None:
    """Refuse ``obj`` (when not None) unless :func:`is_callable` (a function, or a loss module)."""
    if obj is not None and not is_callable(obj):
        raise OptionError(f"{what} must be a function (or a loss module); got {a_kind(obj)}")


def _named(obj: Any, package: str, *names: str) -> bool:
    """``obj`` is an instance of a class called one of ``names`` from ``package`` (read without importing it)."""
    kind = type(obj)
    return kind.__module__.split(".")[0] == package and kind.__name__ in names


def _hf_datasets() -> tuple[type, ...]:
    """Hugging Face's dataset classes, when ``datasets`` is imported already (nothing is imported here)."""
    hf = sys.modules.get("datasets")
    return tuple(getattr(hf, n) for n in ("Dataset", "IterableDataset") if isinstance(getattr(hf, n, None), type))


def is_dataset(obj: Any) -> bool:
    """Training data as a run takes it: a list or tuple, a torch or Hugging Face dataset, a DataLoader."""
    return isinstance(obj, (list, tuple, Dataset, IterableDataset, DataLoader, *_hf_datasets()))


_TENSORS = "an (inputs, targets) pair of tensors `(X, y)`, `TensorDataset(X, y)`, or a list of dicts of model inputs"
_SAID = (("pandas", "DataFrame", "DataFrame"), ("pandas", "Series", "Series"), ("numpy", "ndarray", "array"))
_PASS = "a list of texts, dicts or (input, target) pairs, a Dataset or a DataLoader"


def _instead(obj: Any) -> str | None:
    """What to pass instead of a kind often passed by mistake (after ``is not a dataset here: pass``)."""
    if _named(obj, "pandas", "DataFrame"):
        return "`df['text'].tolist()` or `datasets.Dataset.from_pandas(df)`"
    if _named(obj, "pandas", "Series"):
        return "`series.tolist()`"
    if isinstance(obj, (str, bytes)):
        return "a list of texts (`[text]` for one)"
    if isinstance(obj, Mapping):
        return "a list with one dict per example, or `datasets.Dataset.from_dict(d)`"
    if isinstance(obj, torch.Tensor):
        return _TENSORS
    if _named(obj, "numpy", "ndarray"):
        return f"{_TENSORS} (`torch.from_numpy(x)` makes a tensor)"
    if isinstance(obj, (set, frozenset)):
        return "a list (a set has no order: `sorted(s)`)"
    if isinstance(obj, nn.Module):
        return f"the data to train it on ({_PASS}); the model goes first"
    return None


def wrong_data_kind(obj: Any) -> str | None:
    """The one line saying what to pass instead of ``obj``, when it is a kind passed as training data by mistake
    (a DataFrame, a dict, a str, a tensor, an array, a generator, a set, ...); None for a kind a run may take
    (:func:`is_dataset`, or another sequence whose items the run then reads)."""
    if is_dataset(obj):
        return None
    if _named(obj, "datasets", "DatasetDict", "IterableDatasetDict"):
        splits = ", ".join(f"`data[{k!r}]`" for k in list(obj)[:3])
        return f"{a_kind(obj)} holds splits: pass one of them ({splits})"
    kind = next((f"a {package} {said}" for package, name, said in _SAID if _named(obj, package, name)), a_kind(obj))
    instead = _instead(obj)
    if instead is not None:
        return f"{kind} is not a dataset here: pass {instead}"
    if hasattr(obj, "__next__"):
        return f"{kind} is a one-shot iterator (used up after one pass): pass a list of it, a Dataset or a DataLoader"
    if not hasattr(obj, "__getitem__") or not hasattr(obj, "__len__"):
        return f"cannot train on {kind}: pass {_PASS}"
    return None


def check_dataset(obj: Any) -> None:
    """Refuse a kind passed as training data by mistake, in one line saying what to pass (:func:`wrong_data_kind`)."""
    problem = wrong_data_kind(obj)
    if problem is not None:
        raise DataError(problem)


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
