"""Turn what a user calls training data into batches and a loss.

Accepted forms, checked up front with a one-line ``DataError``:

- a sequence of ``str`` with a tokenizer: causal-LM batches (labels = input ids, padding → -100);
- chat data with a tokenizer (see ``chat``): conversations (lists of ``{"role", "content"}`` messages, or dicts /
  a dataset column ``messages``) and ``{"prompt", "completion"}`` pairs, with the loss on the answers only;
- a ``datasets.Dataset``, a torch ``Dataset``/``DataLoader`` or a sequence of dicts: ``model(**batch).loss``
  (for causal LMs where it is exact, the same loss with the LM head only where labels count: ``head_loss``);
- ``(inputs, targets)`` items, a ``TensorDataset`` or one ``(X, Y)`` tuple of tensors:
  ``loss_fn(output, target)``, cross-entropy by default;
- a ``loss_fn(model, batch)`` (its first parameter is named ``model``) overrides all of these.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from ....errors import DataError, a_kind
from ...kinds import check_dataset
from .chat import ChatExamples, is_chat_item, pad, pad_token_id
from .grouping import LengthGroupedBatches
from .head_loss import selected_loss

LossFn = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class Batches:
    """Re-iterable batches (one pass = one epoch) and how to get a loss from one."""

    loader: Iterable[Any]
    per_epoch: int | None  # batches per pass, when known
    loss: LossFn
    description: str
    token_rows: bool = False  # right-padded rows of lora_nb's own tokenization with the model's loss (``pieces``)


def make_batches(data: Any, *, tokenizer: Any = None, loss_fn: Callable | None = None, batch_size: int = 8,
                 shuffle: bool = True, seed: int | None = 0, max_length: int = 512,
                 group_by_length: bool = False) -> Batches:
    """Batches and a loss for ``data`` in any accepted form, or a one-line ``DataError``.

    ``group_by_length`` (with ``shuffle``): token data (texts, chat) is drawn in batches of similar length
    (``grouping.py``); other forms are shuffled as usual.
    """
    loss = loss_fn if takes_model(loss_fn) else _auto_loss(loss_fn)
    if isinstance(data, DataLoader):
        return Batches(data, _length(data), loss, f"DataLoader ({_length(data) or '?'} batches)")
    data, what = _as_items(data, tokenizer)
    if isinstance(data, _Texts):
        what = f"{len(data)} texts, tokenized (≤ {max_length} tokens)"
        data.tokenize(tokenizer, max_length)
        collate = data.collate
    elif isinstance(data, _Chat):
        data = ChatExamples(data.items, tokenizer, max_length)
        what, collate = data.describe(max_length), data.collate
    else:
        refuse_all_masked(data)
        collate = _collate_for(data)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    own_tokens = isinstance(data, (_Texts, ChatExamples))  # rows lora_nb tokenized and right-padded itself
    tokens = own_tokens and loss_fn is None
    if shuffle and group_by_length and own_tokens:
        if generator is None:  # unseeded: a generator of its own, seeded from torch's RNG
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        sampler = LengthGroupedBatches(data.lengths(), batch_size, generator)
        loader = DataLoader(data, batch_sampler=sampler, collate_fn=collate, generator=generator)
        return Batches(loader, len(loader), loss, f"{what}; batches grouped by length", token_rows=tokens)
    iterable = isinstance(data, IterableDataset)
    loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle and not iterable, collate_fn=collate,
                        generator=generator)
    return Batches(loader, _length(loader), loss, what, token_rows=tokens)


def takes_model(loss_fn: Any) -> bool:
    """True for a ``loss_fn(model, batch)``: its first parameter is named ``model``."""
    if loss_fn is None or isinstance(loss_fn, nn.Module):
        return False
    try:
        params = list(inspect.signature(loss_fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].name == "model"


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _as_items(data: Any, tokenizer: Any) -> tuple[Any, str]:
    """A map-style or iterable dataset for ``data``, and a short description of it."""
    if data is None:
        raise DataError("no training data: pass data=… (a list of texts, dicts, (input, target) pairs, a Dataset)")
    check_dataset(data)  # a DataFrame, a dict, a str, a tensor, a generator, …: one line saying what to pass
    if type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "column_names"):
        return _hf_dataset(data, tokenizer)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        if len(data[0]) != len(data[1]):
            raise DataError(f"inputs and targets differ in length ({len(data[0])} vs {len(data[1])})")
        return TensorDataset(*data), f"{len(data[0])} (input, target) pairs"
    if isinstance(data, IterableDataset):
        return data, f"{type(data).__name__} (iterable)"
    if len(data) == 0:
        raise DataError("the training data is empty")
    first = data[0]
    if is_chat_item(first) and not isinstance(data, Dataset):
        return _Chat(list(data)), ""
    if isinstance(first, str):
        if tokenizer is None:
            raise DataError("texts need a tokenizer: pass `tokenizer=…`")
        return _Texts(list(data)), ""
    if isinstance(data, Dataset):
        return data, f"{type(data).__name__} ({len(data)} items)"
    if isinstance(first, Mapping):
        return data, f"{len(data)} dicts (keys: {', '.join(map(str, first))})"
    if isinstance(first, (tuple, list)) and len(first) == 2:
        return data, f"{len(data)} (input, target) pairs"
    raise DataError(f"items of type {type(first).__name__} are not trainable data: give (input, target) pairs, "
                    "dicts of model inputs, texts with a tokenizer, or a loss_fn(model, batch)")


def _hf_dataset(data: Any, tokenizer: Any) -> tuple[Any, str]:
    """A 🤗 ``datasets.Dataset``: tokenized columns as tensors, or its ``text`` column with a tokenizer."""
    columns = list(data.column_names)
    if len(data) == 0:
        raise DataError("the training dataset is empty")
    if "messages" in columns or {"prompt", "completion"} <= set(columns):
        return _Chat(data.to_list()), ""
    numeric = [c for c in columns if not isinstance(data[0][c], str)]
    if "input_ids" in numeric or ("text" not in columns and numeric):
        return data.with_format("torch", columns=numeric), f"Dataset ({len(data)} rows; {', '.join(numeric)})"
    if "text" in columns:
        if tokenizer is None:
            raise DataError("the dataset has a `text` column: pass `tokenizer=…` to train on it")
        return _Texts(list(data["text"])), ""
    raise DataError(f"cannot use a dataset with columns {', '.join(columns)}: tokenize it (input_ids) or pass "
                    "`loss_fn=…`, a loss_fn(model, batch)")


@dataclass
class _Chat:
    """Chat items still to be tokenized (``ChatExamples`` does it once the tokenizer is known)."""

    items: list[Any]


class _Texts(Dataset):
    """Texts tokenized once; batches are padded on the right with padding masked out of the labels."""

    def __init__(self, texts: list[str]) -> None:
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise DataError(f"item {bad} of the text dataset is {a_kind(texts[bad])}, not a str (every item of a "
                            "text dataset must be a str)")
        self.texts = texts
        self.ids: list[list[int]] = []
        self.pad_id = 0

    def tokenize(self, tokenizer: Any, max_length: int) -> None:
        try:
            self.ids = list(tokenizer(self.texts, truncation=True, max_length=max_length)["input_ids"])
        except Exception as exc:  # a tokenizer of the wrong kind
            raise DataError(f"the tokenizer failed on the texts: {type(exc).__name__}: {exc}") from None
        if not any(self.ids):
            raise DataError("the tokenizer turned every text into zero tokens")
        self.pad_id = pad_token_id(tokenizer)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> list[int]:
        return self.ids[i]

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]

    def collate(self, items: list[list[int]]) -> dict[str, torch.Tensor]:
        return pad(items, items, self.pad_id)


_PAD = {"labels": -100, "attention_mask": 0}


def _collate_for(data: Any) -> Callable[[list], Any] | None:
    """Padding collation for dict items (ragged token lists); torch's default for everything else."""
    first = next(iter(data)) if isinstance(data, IterableDataset) else data[0]
    return collate_dicts if isinstance(first, Mapping) else None


def collate_dicts(items: list[Mapping]) -> dict[str, torch.Tensor]:
    """Stack dict items key by key, padding ragged 1-D values on the right; ``str`` values are dropped."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], str):
            continue
        tensors = [torch.as_tensor(v) for v in values]
        if all(t.shape == tensors[0].shape for t in tensors):
            batch[key] = torch.stack(tensors)
        elif all(t.dim() == 1 for t in tensors):
            batch[key] = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=_PAD.get(key, 0))
        else:
            raise DataError(f"items differ in the shape of `{key}` and cannot be padded: "
                            f"{tuple(tensors[0].shape)} vs {tuple(t.shape for t in tensors[1:2])[0]}")
    return batch


def _auto_loss(loss_fn: Callable | None) -> LossFn:
    """Dict batches → ``model(**batch).loss``; ``(inputs, targets)`` → ``loss_fn(output, targets)``."""

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        if isinstance(batch, Mapping):
            if loss_fn is not None:
                raise DataError("dict batches go to model(**batch) and use its .loss; a loss_fn(output, target) "
                                "needs (input, target) pairs (or write loss_fn(model, batch))")
            selected = selected_loss(model, batch)  # the same loss, logits only where labels count
            if selected is not None:
                return selected
            out = model(**batch)
            value = getattr(out, "loss", None) if not isinstance(out, Mapping) else out.get("loss")
            if value is None:
                raise DataError(f"the model returned no loss for a batch with keys {', '.join(batch)}: include "
                                "labels, or pass a loss_fn(model, batch)")
            return value
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            inputs, target = batch
            out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
            out = getattr(out, "logits", out)
            return (loss_fn or cross_entropy)(out, target)
        raise DataError(f"a batch of type {type(batch).__name__} is neither a dict of model inputs nor "
                        "(inputs, targets); pass a loss_fn(model, batch)")

    return loss


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Default loss for ``(inputs, targets)``: class logits (…, C) against class indices (…)."""
    if output.dim() == target.dim() + 1 and not target.is_floating_point():
        return F.cross_entropy(output.flatten(0, -2).float(), target.flatten(), ignore_index=-100)
    raise DataError(f"the default cross-entropy needs class logits (…, C) and integer targets (…); got outputs "
                    f"{tuple(output.shape)} and {target.dtype} targets {tuple(target.shape)}: pass a loss_fn, "
                    "e.g. torch.nn.MSELoss()")


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (dicts, lists and tuples are walked)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def refuse_all_masked(data: Any) -> None:
    """A one-line ``DataError`` when every row of dict data has labels and all of them are -100 (nothing to learn)."""
    if isinstance(data, IterableDataset) or not len(data) or not isinstance(data[0], Mapping):
        return
    if "labels" not in data[0] or len(data) > 100_000:
        return
    for i in range(len(data)):
        labels = data[i].get("labels")
        if labels is None or bool((torch.as_tensor(labels) != -100).any()):
            return
    raise DataError(f"every one of the {len(data)} rows has all its labels at -100: nothing would be learned "
                    "(`%lora data --data VAR --tokenizer VAR` shows the loss mask)")


def supervised_tokens(batch: Any) -> int:
    """Loss-bearing tokens of a (host-side) batch: its ``labels`` other than -100; 0 without token labels."""
    labels = batch.get("labels") if isinstance(batch, Mapping) else None
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dim() < 2:
        return 0
    return int((labels != -100).sum())


def count(batch: Any) -> tuple[int, int | None]:
    """Samples and tokens in a (host-side) batch; tokens from the attention mask when there is one."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        ids = batch.get("input_ids")
        first = next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
        samples = len(first) if first is not None and first.dim() else 1
        if isinstance(mask, torch.Tensor) and mask.device.type == "cpu":
            return samples, int(mask.sum())
        return samples, (ids.numel() if isinstance(ids, torch.Tensor) else None)
    if isinstance(batch, (list, tuple)) and batch:
        return count(batch[0])[0], None
    if isinstance(batch, torch.Tensor) and batch.dim():
        return len(batch), None
    return 1, None


def positions(batch: Any) -> int | None:
    """Token positions of a batch of token ids, padding included (``input_ids``' size), else None."""
    ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
    return ids.numel() if isinstance(ids, torch.Tensor) else None
