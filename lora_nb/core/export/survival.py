"""Did the fine-tune survive the export? Per module, the share of ΔW still there after rounding/quantization.

kept = ⟨Q(W + ΔW) − Q(W), ΔW⟩ / ‖ΔW‖², with Q the export's rounding (a dtype cast, or a GGUF quantizer and its
dequantizer, applied in the layout the file stores). 1 means the written update equals ΔW; 0 means the exported
model is indistinguishable from the exported base along ΔW. Both models go through the same Q, so what is measured
is the update's own loss, not the base's rounding. Where W sits off Q's grid (a float32 W quantized to q8_0) W
dithers the rounding: the expected reading stays near 1 even for updates below one grid step, and rounding noise
moves it a little either way (also above 1). Where W is on the grid (a bf16 base merged back into bf16) an update
below half a step rounds away entirely and the reading drops towards 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...errors import LoraNBWarning

ERASED = 0.5  # a module keeping less than this share of ΔW counts as erased


def kept(base: torch.Tensor, delta: torch.Tensor, rounding: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The share of ``delta`` that survives ``rounding`` applied to ``base + delta`` and to ``base`` alike."""
    norm = float((delta.double() ** 2).sum())
    if norm == 0.0:
        return 1.0
    moved = rounding(base + delta).double() - rounding(base).double()
    return float((moved * delta.double()).sum()) / norm


@dataclass
class Survival:
    """``kept`` per module for one export, and the user's metric before/after when one was given."""

    encoding: str  # e.g. "bfloat16", "gguf q4_0"
    modules: dict[str, float] = field(default_factory=dict)
    metric: tuple[float, float] | None = None  # (on the live model, on the reloaded export)

    @property
    def erased(self) -> list[str]:
        return [m for m, k in self.modules.items() if k < ERASED]

    @property
    def mostly_erased(self) -> bool:
        return bool(self.modules) and len(self.erased) > len(self.modules) / 2

    @property
    def median(self) -> float:
        values = sorted(self.modules.values())
        return values[len(values) // 2] if values else 1.0

    def summary(self) -> str:
        if not self.modules:
            return f"ΔW survival ({self.encoding}): no adapted module"
        low = min(self.modules, key=self.modules.get)
        text = (f"ΔW kept after {self.encoding}: median {self.median:.1%} over {len(self.modules)} modules, "
                f"lowest {self.modules[low]:.1%} ({low})")
        if self.metric is not None:
            text += f"; metric {self.metric[0]:.4g} → {self.metric[1]:.4g} (live → reloaded export)"
        return text

    def warn_if_erased(self) -> None:
        if self.mostly_erased:
            warnings.warn(f"the export erased most of the fine-tune: {len(self.erased)} of {len(self.modules)} "
                          f"modules keep < {ERASED:.0%} of ΔW after {self.encoding} (try a finer --quant)",
                          LoraNBWarning, stacklevel=3)


def cast_rounding(dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """Q for a dtype cast: round to ``dtype`` and read back as float32."""
    return lambda t: t.to(dtype).float()
