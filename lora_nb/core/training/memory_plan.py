"""A memory plan for a run: what training will hold on the device, whether it fits, what to change if not.

Weights, gradients and AdamW's state are counted exactly from the parameters (AdamW keeps two
moments per trainable parameter in its dtype, fp32 for LoRA). Activations are measured, not
guessed: real forwards and backwards on the longest 1 and (up to) 4 samples of the data, on the model's
device, counting every tensor storage alive at once (CUDA: the allocator's peak; elsewhere
``TrackedAllocations``), minus the gradients; extended linearly to the batch size. The samples
are the longest, so the estimate holds for the widest batch. Nothing the measurement touches
stays changed: gradients, train/eval modes, ``requires_grad`` flags, buffers (BatchNorm
statistics) and the RNG state are put back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .allocations import SavedTensorBytes, TrackedAllocations, storage_keys
from .data import Batches, count, to_device
from .memory import trainable_state_bytes
from .recompute import enable as enable_grad_checkpointing
from .recompute import supports_grad_checkpointing

MB = 2**20
MEASURE_MAX = 4  # samples in the larger measuring batch


@dataclass
class MemoryPlan:
    """Bytes a run needs on its device, by kind; ``fits`` and ``advice`` compare them with free memory."""

    device: str
    batch_size: int
    grad_accum: int
    weights: int  # parameters and buffers of the whole model
    gradients: int
    optimizer: int  # AdamW moments and step counters, and the loop's pre-step copy of the trained weights
    activations: int | None  # peak of forward + backward at ``batch_size`` (None: could not measure)
    measured_on: str
    free: int | None  # available on the device now (None: unknown)
    resident: int  # weight bytes already on that device (inside the used memory, not the free)
    grad_checkpointing: bool = False
    can_grad_checkpoint: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + (self.activations or 0)

    @property
    def fits(self) -> bool | None:
        if self.free is None or self.activations is None:
            return None
        return self.total - self.resident <= self.free

    def needs(self, batch_size: int) -> int:
        """Bytes still to allocate on the device at another micro-batch size."""
        acts = (self.activations or 0) * batch_size / self.batch_size
        return int(self.weights + self.gradients + self.optimizer + acts - self.resident)

    def advice(self) -> list[str]:
        """What to change when the run does not fit (empty when it fits or cannot be judged)."""
        if self.fits is not False:
            return []
        tips, effective = [], self.batch_size * self.grad_accum
        smaller = self.batch_size // 2
        while smaller >= 1 and self.needs(smaller) > self.free:
            smaller //= 2
        if smaller >= 1:
            tips.append(f"--batch-size {smaller} --grad-accum {max(1, effective // smaller)} (same effective batch)")
        if self.can_grad_checkpoint and not self.grad_checkpointing:
            tips.append("--grad-checkpointing (keeps about one layer's activations; steps ~30% slower)")
        tips.append(f"a 4-bit base (load the model quantized with bitsandbytes, then attach): weights "
                    f"{self.weights / MB:,.0f} MB → about {self.weights / 4 / MB:,.0f} MB")
        return tips

    def line(self) -> str:
        """One line for the start of a run."""
        acts = "?" if self.activations is None else f"{self.activations / MB:,.1f}"
        head = (f"memory plan on {self.device}: ~{self.total / MB:,.1f} MB (weights {self.weights / MB:,.1f}, "
                f"grads {self.gradients / MB:,.1f}, AdamW {self.optimizer / MB:,.1f}, activations {acts})")
        if self.fits is None:
            return head
        free = f"{self.free / MB:,.0f} MB free"
        if self.fits:
            return f"{head}; fits ({free})"
        return f"{head}; does NOT fit ({free}): try " + "; or ".join(self.advice())

    def table(self) -> str:
        rows = [("weights (parameters + buffers)", self.weights), ("gradients (trainable)", self.gradients),
                ("AdamW state + pre-step copy", self.optimizer), ("activations (measured, scaled)",
                                                                   self.activations)]
        lines = [f"memory plan for batch {self.batch_size}" + (f"×{self.grad_accum}" if self.grad_accum > 1 else "")
                 + f" on {self.device}" + (" with gradient checkpointing" if self.grad_checkpointing else "")]
        lines += [f"  {name:<34}{'?' if b is None else f'{b / MB:>10,.1f} MB'}" for name, b in rows]
        lines.append(f"  {'total':<34}{self.total / MB:>10,.1f} MB")
        lines.append(f"  activations measured on {self.measured_on}")
        if self.free is not None:
            verdict = {True: "fits", False: "does NOT fit", None: "cannot tell"}[self.fits]
            lines.append(f"  {verdict}: {self.free / MB:,.0f} MB free on {self.device}"
                         + (f" (+{self.resident / MB:,.1f} MB of weights already there)" if self.resident else ""))
        lines += [f"  try: {tip}" for tip in self.advice()] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, each storage once (tied weights count once)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def resident_bytes(model: torch.nn.Module, device: torch.device) -> int:
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in [*model.parameters(), *model.buffers()] if t.device.type == device.type}
    return sum(seen.values())


def free_bytes(device: torch.device) -> int | None:
    """Memory available on ``device`` now: CUDA's free memory, or the system's available RAM."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            import psutil

            return int(psutil.virtual_memory().available)
    except Exception:  # an unknown device or a missing psutil: the plan just cannot judge
        return None
    return None


def measuring_batch(batches: Batches, n: int) -> tuple[Any, int] | None:
    """A batch of the ``n`` longest items of the data (first ``n`` when lengths are unknown), and its size."""
    loader = batches.loader
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    if dataset is None or collate is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        return None
    n = max(1, min(n, len(dataset)))
    lengths = [_item_length(dataset[i]) for i in range(min(len(dataset), 4096))]
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if all(lengths) else list(range(len(lengths)))
    batch = collate([dataset[i] for i in order[:n]])
    return batch, count(batch)[0]


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
        out = model(**batch)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is not None:
            return loss
    else:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    out = getattr(out, "logits", out)
    return out.float().square().mean()


def make_plan(model: torch.nn.Module, params: list[torch.nn.Parameter], batches: Batches, settings: Any,
              device: torch.device, autocast: Any = contextlib.nullcontext, loss_fn: Any = None,
              measure: bool = True, quick: bool = False) -> MemoryPlan:
    """The memory plan of training ``params`` of ``model`` on ``batches`` with ``settings`` on ``device``.

    ``loss_fn(model, batch)`` drives the measured backward; by default ``model_only_loss``, which
    calls no user function (a user's loss may have side effects). ``quick``: the cheaper measure of
    ``activation_peak`` (what a run uses at its start; ``%lora plan`` measures fully).
    """
    state = trainable_state_bytes(params)
    grads = sum(p.numel() * p.element_size() for p in params)
    plan = MemoryPlan(str(device), settings.batch_size, settings.grad_accum, weight_bytes(model), grads,
                      state - grads, None, "nothing (no measurable batch)", free_bytes(device),
                      resident_bytes(model, device), bool(settings.grad_checkpointing),
                      supports_grad_checkpointing(model))
    if not measure:
        plan.notes.append("activations not measured (a loss_fn(model, batch) runs only when asked: `%lora plan`, "
                          "plan_memory)")
        return plan
    size = min(settings.batch_size, _length(batches) or settings.batch_size)
    checkpointing = settings.grad_checkpointing and supports_grad_checkpointing(model)
    undo = enable_grad_checkpointing(model) if checkpointing else (lambda: None)
    try:
        plan.activations, plan.measured_on = activations_at(model, params, batches, size, autocast,
                                                            loss_fn or model_only_loss, quick)
    except Exception as exc:  # the run's first step reports a real failure; the plan only says it could not measure
        plan.notes.append(f"activations not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    finally:
        undo()
    return plan


def activations_at(model: torch.nn.Module, params: list[torch.nn.Parameter], batches: Batches, size: int,
                   autocast: Any, loss_fn: Any, quick: bool = False) -> tuple[int | None, str]:
    """Activation bytes (and the batch's own tensors) at micro-batch ``size``: measured on 1 sample and
    on up to 4, extended along that line.

    The growth per sample is the larger of the peak's and the saved tensors' (on a few samples the
    peak can sit in a batch-independent moment of backward, while saved activations always grow).
    """
    one = measuring_batch(batches, 1)
    if one is None:
        return None, "nothing (the data has no indexable dataset)"
    peak_one, saved_one = activation_peak(model, params, loss_fn, one[0], autocast, quick)
    width = _width(one[0])
    where = f" of {width} tokens (the longest)" if width else ""
    where += " (forward only: saved tensors, no backward temporaries)" if quick else ""
    inputs = tensor_bytes(one[0])
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
    from torch.utils._pytree import tree_leaves

    return sum(t.numel() * t.element_size() for t in tree_leaves(batch) if isinstance(t, torch.Tensor))


def _length(batches: Batches) -> int | None:
    dataset = getattr(batches.loader, "dataset", None)
    try:
        return len(dataset)
    except TypeError:
        return None


def _width(batch: Any) -> int | None:
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    return int(ids.shape[-1]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else None
