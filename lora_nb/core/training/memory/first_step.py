"""A CPU run's activations measured on its own first step, instead of by an extra forward before it.

While the first optimizer step runs, saved-tensor hooks (thread-local: the training thread only)
count the bytes autograd keeps for backward — the ``quick`` measure of ``activations.py``, on the
real batch. Token data scales the count per token position to the widest batch the data can give
(``batch_size`` × the longest sample); other data counts one micro-batch. A run measures this way
when memory cannot be short: on the CPU with free RAM well above what the weights, gradients and
optimizer state take (``plenty_of_ram``); elsewhere (GPUs, tight RAM, gradient checkpointing) the
plan is measured before the first step, as ``make_plan`` does.
"""

from __future__ import annotations

from typing import Any

import torch

from .activations import item_lengths
from .allocations import SavedTensorBytes, storage_keys
from .plan import MemoryPlan, data_length

HEADROOM = 2 * 2**30  # free RAM beyond 4× the counted state that makes the measure-first check needless


def plenty_of_ram(plan: MemoryPlan) -> bool:
    """Free RAM above 4× the weights, gradients and optimizer state plus ``HEADROOM``."""
    return plan.free is not None and plan.free >= 4 * plan.total + HEADROOM


class FirstStepActivations:
    """``start()`` before the first step; ``finish(positions, micro_batches)`` after it fills the plan's
    ``activations``."""

    def __init__(self, model: torch.nn.Module, plan: MemoryPlan, batches: Any, batch_size: int) -> None:
        self.plan = plan
        self.saved = SavedTensorBytes(storage_keys([*model.parameters(), *model.buffers()]))
        self.dataset = getattr(batches.loader, "dataset", None)
        self.size = min(batch_size, data_length(batches) or batch_size)
        plan.pending, plan.measured_on = True, "the first step (not yet run)"
        self.active = False

    def longest(self) -> int | None:
        """Tokens in the longest sample: from a token dataset's ``lengths()`` or an in-memory list of items (a
        dataset that loads or computes its items is not read again for this)."""
        data = self.dataset
        if not (callable(getattr(data, "lengths", None)) or isinstance(data, (list, tuple))):
            return None
        try:
            lengths = item_lengths(data)
        except Exception:  # items the training reads its own way; the plan then counts a micro-batch
            return None
        return max(lengths) if lengths and all(lengths) else None

    def start(self) -> None:
        self.saved.__enter__()
        self.active = True

    def stop(self) -> None:
        if self.active:
            self.saved.__exit__(None, None, None)
            self.active = False

    def finish(self, positions: int | None, micro_batches: int) -> None:
        self.stop()
        plan, saved = self.plan, self.saved.bytes
        longest = self.longest() if positions else None
        if longest:
            plan.activations = int(saved / positions * self.size * longest)
            plan.measured_on = (f"the first step (saved tensors of {positions} token positions), scaled to the "
                                f"widest batch ({self.size} × {longest} tokens)")
        else:
            plan.activations = int(saved / micro_batches)
            plan.measured_on = "the first step (saved tensors of one micro-batch)"
        plan.pending = False
