"""A memory plan for a run: what training will hold on the device, whether it fits, what to change if not.

Weights, gradients and AdamW's state are counted exactly from the parameters (AdamW keeps two
moments per trainable parameter in its dtype, fp32 for LoRA). Activations are measured, not
guessed (``activations.py``), on the longest samples, so the estimate holds for the widest batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ....errors import first_line
from ..data.batches import Batches
from .activations import activations_at, model_only_loss
from .budget import trainable_state_bytes
from .recompute import enable as enable_grad_checkpointing
from .recompute import supports_grad_checkpointing

MB = 2**20


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
    pending: bool = False  # activations to be measured on the run's first step (``first_step.py``)
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
            tips.append(f"`batch_size={smaller}, grad_accum={max(1, effective // smaller)}` (same effective batch)")
        if self.can_grad_checkpoint and not self.grad_checkpointing:
            tips.append("`grad_checkpointing=True` (keeps about one layer's activations; steps ~30% slower)")
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
    """Memory available on ``device`` now: CUDA's free memory, or the system's available RAM (None: unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            return available_ram()
    except (RuntimeError, OSError, ValueError):  # an unusable device: the plan just cannot judge
        return None
    return None


def available_ram() -> int | None:
    """``MemAvailable`` of /proc/meminfo (Linux), else psutil's ``available`` when psutil is installed."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def static_plan(model: torch.nn.Module, params: list[torch.nn.Parameter], settings: Any,
                device: torch.device) -> MemoryPlan:
    """The plan's counted parts (weights, gradients, optimizer state, free memory); activations not measured."""
    state = trainable_state_bytes(params)
    grads = sum(p.numel() * p.element_size() for p in params)
    return MemoryPlan(str(device), settings.batch_size, settings.grad_accum, weight_bytes(model), grads,
                      state - grads, None, "nothing (no measurable batch)", free_bytes(device),
                      resident_bytes(model, device), bool(settings.grad_checkpointing),
                      supports_grad_checkpointing(model))


def make_plan(model: torch.nn.Module, params: list[torch.nn.Parameter], batches: Batches, settings: Any,
              device: torch.device, autocast: Any = contextlib.nullcontext, loss_fn: Any = None,
              measure: bool = True, quick: bool = False) -> MemoryPlan:
    """The memory plan of training ``params`` of ``model`` on ``batches`` with ``settings`` on ``device``.

    ``loss_fn(model, batch)`` drives the measured backward; by default ``model_only_loss``, which
    calls no user function (a user's loss may have side effects). ``quick``: the cheaper measure of
    ``activation_peak`` (what a run uses at its start; ``%lora plan`` measures fully).
    """
    plan = static_plan(model, params, settings, device)
    if not measure:
        plan.notes.append("activations not measured (a loss_fn(model, batch) runs only when asked: "
                          "`lora_nb.plan_memory(model)`)")
        return plan
    size = min(settings.batch_size, data_length(batches) or settings.batch_size)
    checkpointing = settings.grad_checkpointing and supports_grad_checkpointing(model)
    undo = enable_grad_checkpointing(model) if checkpointing else (lambda: None)
    try:
        plan.activations, plan.measured_on = activations_at(model, params, batches, size, autocast,
                                                            loss_fn or model_only_loss, quick)
    except Exception as exc:  # the run's first step reports a real failure; the plan only says it could not measure
        plan.notes.append(f"activations not measured: {type(exc).__name__}: {first_line(exc)[:120]}")
    finally:
        undo()
    return plan


def data_length(batches: Batches) -> int | None:
    """Samples in the data, when its loader has a sized dataset."""
    dataset = getattr(batches.loader, "dataset", None)
    try:
        return len(dataset)
    except TypeError:
        return None


