"""Activation memory of a training step, measured on a few samples and extended to a batch size.

Real forwards and backwards on the longest 1 and (up to) 4 samples of the data, on the model's
device, count every tensor storage alive at once (CUDA: the allocator's peak; elsewhere
``TrackedAllocations``) minus the gradients; the growth per sample extends the count linearly.
Nothing the measurement touches stays changed: gradients, train/eval modes, ``requires_grad``
flags, buffers (BatchNorm statistics) and the RNG state are put back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from ..data.batches import Batches, count, to_device
from ..data.head_loss import selected_loss
from .allocations import SavedTensorBytes, TrackedAllocations, storage_keys

MEASURE_MAX = 4  # samples in the larger measuring batch


def measuring_batch(batches: Batches, n: int) -> tuple[Any, int] | None:
    """A batch of the ``n`` longest items of the data (first ``n`` when lengths are unknown), and its size."""
    loader = batches.loader
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    if dataset is None or collate is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        return None
    n = max(1, min(n, len(dataset)))
    lengths = item_lengths(dataset)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if all(lengths) else list(range(len(lengths)))
    batch = collate([dataset[i] for i in order[:n]])
    return batch, count(batch)[0]


def item_lengths(dataset: Any) -> list[int]:
    """Tokens per item (the first 4096 items, or all from a token dataset's ``lengths()``); 0 where unknown."""
    if callable(getattr(dataset, "lengths", None)):
        return list(dataset.lengths())
    return [_item_length(dataset[i]) for i in range(min(len(dataset), 4096))]


def _item_length(item: Any) -> int:
    """Tokens in one item (token lists, dicts with input_ids); 0 when unknown."""
    if isinstance(item, dict):
        item = item.get("input_ids")
    if isinstance(item, (list, tuple)) and all(isinstance(x, int) for x in item[:4]):
        return len(item)
    if isinstance(item, torch.Tensor) and item.dim() == 1 and not item.is_floating_point():
        return len(item)
    return 0


@contextlib.contextmanager
def measurement_guard(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Train mode with only ``params`` trainable; modes, flags, grads, buffers and RNG restored after."""
    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    grads = {p: p.grad for p in params}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    ids = {id(p) for p in params}
    devices = [p.device for p in params[:1] if p.device.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=devices):
            for p in model.parameters():
                p.requires_grad_(id(p) in ids)
            model.train()
            yield
    finally:
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)
        for p, g in grads.items():
            p.grad = g
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for m, mode in modes.items():
            m.training = mode


def activation_peak(model: torch.nn.Module, params: list[torch.nn.Parameter], loss_fn: Any, batch: Any,
                    autocast: Any = contextlib.nullcontext, quick: bool = False) -> tuple[int, int]:
    """Peak bytes of one forward + backward on ``batch`` beyond the weights (minus the gradients it leaves),
    and the bytes autograd saved for backward. ``quick`` (CPU): a forward only, counting saved bytes
    (no allocation tracking; the backward's temporaries are then not seen)."""
    device = params[0].device
    batch = to_device(batch, device)
    grads = sum(p.numel() * p.element_size() for p in params)
    saved = SavedTensorBytes(storage_keys([*model.parameters(), *model.buffers()]), keep=not quick)
    with measurement_guard(model, params):
        for p in params:
            p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            start = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            _forward_backward(model, loss_fn, batch, autocast, saved)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - start
        elif quick:
            with autocast(), saved:
                loss_fn(model, batch)
            return saved.bytes, saved.bytes
        else:
            with TrackedAllocations() as tracked:
                _forward_backward(model, loss_fn, batch, autocast, saved)
            peak = tracked.peak
    return max(0, peak - grads), saved.bytes


def _forward_backward(model: torch.nn.Module, loss_fn: Any, batch: Any, autocast: Any,
                      saved: SavedTensorBytes) -> None:
    with autocast(), saved:
        loss = loss_fn(model, batch)
    loss.backward()


def model_only_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """A loss that runs no user code: the model's own loss for dict batches, else the outputs' mean square
    (which keeps one float copy of the outputs for backward, as a cross-entropy's softmax does)."""
    if isinstance(batch, Mapping):
        selected = selected_loss(model, batch)  # what a run computes (``head_loss``)
        if selected is not None:
            return selected
        out = model(**batch)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is not None:
            return loss
    else:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    out = getattr(out, "logits", out)
    return out.float().square().mean()


def activations_at(model: torch.nn.Module, params: list[torch.nn.Parameter], batches: Batches, size: int,
                   autocast: Any, loss_fn: Any, quick: bool = False) -> tuple[int | None, str]:
    """Activation bytes (and the batch's own tensors) at micro-batch ``size``: measured on 1 sample and
    on up to 4, extended along that line.

    The growth per sample is the larger of the peak's and the saved tensors' (on a few samples the
    peak can sit in a batch-independent moment of backward, while saved activations always grow).
    ``quick`` (what every CPU run measures at its start): one forward on the longest sample, its saved
    bytes times ``size`` (at a fixed width saved activations grow in proportion to the samples; the
    few batch-independent ones are counted ``size`` times, which errs on the safe side).
    """
    one = measuring_batch(batches, 1)
    if one is None:
        return None, "nothing (the data has no indexable dataset)"
    peak_one, saved_one = activation_peak(model, params, loss_fn, one[0], autocast, quick)
    width = _width(one[0])
    where = f" of {width} tokens (the longest)" if width else ""
    where += " (forward only: saved tensors, no backward temporaries)" if quick else ""
    inputs = tensor_bytes(one[0])
    if quick and size > 1 and params[0].device.type != "cuda":
        return int((peak_one + inputs) * size), f"1 sample{where}, times {size}"
    if size == 1:
        return peak_one + inputs, f"1 sample{where}"
    more, n = measuring_batch(batches, min(size, MEASURE_MAX))
    if n < 2:
        return int((peak_one + inputs) * size), f"1 sample{where}"
    peak_more, saved_more = activation_peak(model, params, loss_fn, more, autocast, quick)
    per_sample = max(0, peak_more - peak_one, saved_more - saved_one) / (n - 1)
    inputs = tensor_bytes(more) / n * size
    return int(peak_one + per_sample * (size - 1) + inputs), f"1 and {n} samples{where}, extended to {size}"


def tensor_bytes(batch: Any) -> int:
    """Bytes of the tensors in a (nested) batch."""
    return sum(t.numel() * t.element_size() for t in tree_leaves(batch) if isinstance(t, torch.Tensor))


def _width(batch: Any) -> int | None:
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    return int(ids.shape[-1]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else None
