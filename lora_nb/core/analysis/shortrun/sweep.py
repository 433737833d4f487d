"""The data-size sweep's inputs: sizes parsed and checked, and seeded random subsets of any data form."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ....errors import DataError, OptionError, a_kind


def parse_sizes(sizes: Any, data: Any, eval_data: Any) -> list[int]:
    """The sweep's training-set sizes, ascending, checked against the data (one-line errors)."""
    if sizes is None or (isinstance(sizes, str) and not sizes.strip()):
        return []
    parts = [p for p in sizes.replace(" ", "").split(",") if p] if isinstance(sizes, str) else list(sizes)
    values = sorted({_as_size(p) for p in parts})
    if eval_data is None:
        raise OptionError("the data-size sweep compares eval losses: pass `eval_data=…`")
    total = n_items(data)
    if values and values[-1] > total:
        raise OptionError(f"sizes go up to {values[-1]} but the training data has {total} items")
    return values


def _as_size(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise OptionError(f"sizes must be whole numbers like 25,50,100; got `{value}`") from None
    if number < 1 or float(value) != number:
        raise OptionError(f"sizes must be whole numbers ≥ 1; got `{value}`")
    return number


def _is_pair(data: Any) -> bool:
    return isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)


def n_items(data: Any) -> int:
    """How many training examples ``data`` holds (an ``(X, Y)`` tensor pair counts its rows)."""
    if _is_pair(data):
        return len(data[0])
    if isinstance(data, DataLoader) or not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise DataError("the data-size sweep needs data it can subsample: a list, an (X, Y) tensor pair or a "
                        f"Dataset, not {a_kind(data)}")
    return len(data)


def subset(data: Any, n: int, seed: int) -> Any:
    """``n`` examples of ``data`` drawn at random (seeded), in the same form as ``data``."""
    index = torch.randperm(n_items(data), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    if _is_pair(data):
        return data[0][index], data[1][index]
    if hasattr(data, "select") and hasattr(data, "column_names"):  # 🤗 datasets
        return data.select(index)
    if isinstance(data, Dataset):
        return Subset(data, index)
    return [data[i] for i in index]
