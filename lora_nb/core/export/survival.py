"""Did the fine-tune survive the export? Per module, the share of ΔW the written numbers reproduce.

The update the file holds is Q(W + ΔW) − Q(W), with Q the export's rounding (a dtype cast, or a GGUF quantizer and
its dequantizer, applied in the layout the file stores); both models go through the same Q, so what is measured is
the update's own loss, not the base's rounding. Its component along ΔW is g·ΔW with g = ⟨Q(W + ΔW) − Q(W), ΔW⟩ /
‖ΔW‖² (the gain along ΔW), and kept = 1 − |1 − g|: the share of ΔW reproduced along its own direction, where a
shortfall and an overshoot count alike (g = 1.009 keeps 99.1 %, not 100.9 %: rounding noise that adds to ΔW is not
more of the fine-tune), floored at 0 (g ≤ 0 or ≥ 2: nothing of ΔW is there). 1 means the written update equals ΔW
along ΔW; 0 means the exported model is indistinguishable from the exported base along ΔW. Where W sits off Q's grid
(a float32 W quantized to q8_0) W dithers the rounding: g stays near 1 even for updates below one grid step, and
rounding noise moves it a little either way. Where W is on the grid (a bf16 base merged back into bf16) an update
below half a step rounds away entirely and the reading drops towards 0. The rounding noise orthogonal to ΔW is the
same dither the exported base carries; it is not counted here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...errors import LoraNBWarning

ERASED = 0.5  # a module keeping less than this share of ΔW counts as erased


def share(written: torch.Tensor, delta: torch.Tensor) -> float:
    """The share of ``delta`` that ``written`` reproduces along ``delta``: 1 − |1 − ⟨written, delta⟩ / ‖delta‖²|,
    floored at 0 (1 when ``delta`` is zero)."""
    delta = delta.double()
    norm = float((delta ** 2).sum())
    if norm == 0.0:
        return 1.0
    gain = float((written.double() * delta).sum()) / norm
    return max(0.0, 1.0 - abs(1.0 - gain))


def kept(base: torch.Tensor, delta: torch.Tensor, rounding: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The share of ``delta`` that survives ``rounding`` applied to ``base + delta`` and to ``base`` alike."""
    if float((delta.double() ** 2).sum()) == 0.0:
        return 1.0
    return share(rounding(base + delta).double() - rounding(base).double(), delta)


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
