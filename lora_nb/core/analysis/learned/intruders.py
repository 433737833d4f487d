"""Intruder dimensions you can dial: scale them in place by λ ∈ [0, 1], undoable exactly.

Intruder dimensions (Shuttleworth et al. 2024) are top singular vectors of W+ΔW with best |cos| below
ε against every singular vector of W. As peft's ``reduce_intruder_dimension``: with U_I S_I V_Iᵀ the
intruder part of W+ΔW, the dialled update is ΔW(λ) = ΔW + (λ − 1)·U_I S_I V_Iᵀ, written back as rank-r
factors (its top r singular triplets, σ split evenly between B and A). Unlike peft's function it works
in place on the adapter (no new adapter per setting), knows transposed (GPT-2 ``Conv1D``) and conv
layers, caches the SVDs so a slider can move it live, and λ = 1 (or ``restore()``) puts the original
factors back bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ....errors import LoraNBError
from ... import registry
from ...adapters import factors as F


@dataclass
class LayerIntruders:
    """One layer's intruder part of W+ΔW (float64, as out × in) and ΔW's original factors."""

    factors: F.Factors
    u: torch.Tensor  # out × m
    s: torch.Tensor  # m
    v: torch.Tensor  # in × m
    best_cos: np.ndarray  # per top-k vector of W+ΔW: best |cos| with W's

    @property
    def count(self) -> int:
        return len(self.s)


def find_intruders(layer, f: F.Factors, k: int, eps: float) -> LayerIntruders:
    """The intruder dimensions among the top ``k`` of W+ΔW for one layer (dense SVDs of W and W+ΔW)."""
    w = F.base_matrix(layer, f)
    w = w.to(F.work_device(w), torch.float64)
    delta = f.scaling * f.B.to(w.device, torch.float64) @ f.A.to(w.device, torch.float64)
    u_w = torch.linalg.svd(w, full_matrices=False)[0]
    u, s, vh = torch.linalg.svd(w + delta, full_matrices=False)
    best = (u[:, :k].T @ u_w).abs().max(dim=1).values
    idx = torch.where(best < eps)[0]
    return LayerIntruders(f, u[:, idx], s[idx], vh[idx].T, best.cpu().numpy())


class IntruderDial:
    """Scales every layer's intruder dimensions of ``adapter`` by ``scale`` (1: as trained); ``restore()`` undoes."""

    def __init__(self, model, adapter: str | None = None, k: int = 10, eps: float = 0.5,
                 layers: str | None = None) -> None:
        self.session = registry.require(model)
        self.session.ensure_idle("dial intruder dimensions")
        self.adapter, fs = F.read(model, adapter, layers)
        self.k, self.eps, self.scale = k, eps, 1.0
        modules = dict(self.session.model.named_modules())
        self.layers = {f.name: find_intruders(modules[f.name], f, k, eps) for f in fs}

    @property
    def counts(self) -> dict[str, int]:
        return {name: part.count for name, part in self.layers.items()}

    def set(self, scale: float) -> None:
        """Intruder dimensions at ``scale`` × their trained size in every layer (0: removed, 1: original factors)."""
        if not 0.0 <= scale <= 1.0:
            raise LoraNBError(f"the intruder scale must be in [0, 1]; got {scale:g}")
        self.session.ensure_idle("dial intruder dimensions")
        with self.session.lock, torch.no_grad():
            for name, part in self.layers.items():
                if part.count:
                    a, b = (part.factors.A, part.factors.B) if scale == 1.0 else self._factors(part, scale)
                    self._write(name, a, b)
        self.scale = scale
        self.session.notify("intruders")

    def restore(self) -> None:
        """Put every layer's original factors back exactly."""
        self.set(1.0)

    def _factors(self, part: LayerIntruders, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        f = part.factors
        delta = f.B.to(torch.float64) @ f.A.to(torch.float64)
        delta = delta + (scale - 1.0) / f.scaling * (part.u * part.s) @ part.v.T
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        n = min(f.r, len(s))
        root = s[:n].sqrt()
        a, b = torch.zeros_like(f.A, dtype=torch.float64), torch.zeros_like(f.B, dtype=torch.float64)
        a[:n], b[:, :n] = root[:, None] * vh[:n], u[:, :n] * root
        return a.to(f.A.dtype), b.to(f.B.dtype)

    def _write(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        layer = self.session.model.get_submodule(name)
        if self.adapter in getattr(layer, "lora_embedding_A", {}):
            pa, pb = layer.lora_embedding_A[self.adapter], layer.lora_embedding_B[self.adapter]
        else:
            pa, pb = layer.lora_A[self.adapter].weight, layer.lora_B[self.adapter].weight
        pa.copy_(a.reshape(pa.shape))
        pb.copy_(b.reshape(pb.shape))
