"""Which directions LoRA and full fine-tuning move a layer in: subspace overlaps of their updates.

Per adapted layer, with k = LoRA's rank there:

- ``left`` / ``right``: the cosines of the principal angles between the top-k left (output-side) and
  right (input-side) singular subspaces of LoRA's ΔW and of full fine-tuning's ΔW = W_after − W_before;
  ``overlap`` = mean cos² (1: the same subspace; a random one gives about k / dimension);
- at step 0, how LoRA's factors sit against the top-k singular vectors of the full gradient G = ∂L/∂W
  on the first batch (the view behind gradient-aligned inits such as LoRA-GA and LoRA-One): ``grad_a0``,
  the overlap of A₀'s row space (random init) with G's top-k right vectors, against ``random_a`` = k / in;
  ``grad_b``: the overlap of the trained B's column space with G's top-k left vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...adapters import factors as F
from ...training.callbacks import Callback
from ...training.data.batches import to_device
from ..learned.spectra import delta_svd
from ..learned.weights import TableResult

if TYPE_CHECKING:  # pragma: no cover
    from ...training.run import TrainRun


def top_vectors(m: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal bases (out × k, in × k, float64) of the top-``k`` left and right singular subspaces of ``m``.

    Exact, without a dense SVD: the eigenvectors of the smaller Gram matrix (mᵀm or m·mᵀ, float64, a direct
    method) are ``m``'s top right (or left) singular vectors, and the other side spans ``m`` times them (an
    orthonormal basis by QR; where ``m`` has rank below ``k``, the basis is completed arbitrarily, as an SVD's is).
    On SmolLM2's shapes (576 × 576 to 1536 × 576) this is 2-3.5× faster than a dense float64 ``torch.linalg.svd``;
    principal angles need only the subspaces.
    """
    m = m.to(torch.float64)
    tall = m.shape[0] >= m.shape[1]
    gram = m.T @ m if tall else m @ m.T
    top = torch.linalg.eigh(gram)[1][:, -k:].flip(-1)  # eigh is ascending: the k largest, largest first
    other = orthonormal(m @ top if tall else m.T @ top)
    return (other, top) if tall else (top, other)


def orthonormal(m: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of ``m`` (float64)."""
    return torch.linalg.qr(m.to(torch.float64))[0]


def principal_cosines(q1: torch.Tensor, q2: torch.Tensor) -> np.ndarray:
    """Cosines of the principal angles between the column spaces of orthonormal ``q1`` and ``q2``, descending."""
    return torch.linalg.svdvals(q1.T @ q2.to(q1.device)).clamp(max=1.0).cpu().numpy()


def overlap(cosines: np.ndarray) -> float:
    """Mean cos² of principal angles: 1 for the same subspace, about k / dimension for a random one."""
    return float(np.mean(cosines ** 2)) if len(cosines) else 0.0


@dataclass(frozen=True)
class LayerDirections:
    k: int
    left: np.ndarray  # principal-angle cosines, output side
    right: np.ndarray  # input side
    random_left: float  # k / out
    random_right: float  # k / in
    grad_a0: float | None = None
    grad_b: float | None = None


class Directions(TableResult):
    """``{module: LayerDirections}``: LoRA's and full fine-tuning's updates, and the step-0 gradient."""

    def _title(self) -> str:
        return f"directions of LoRA vs full fine-tuning in {len(self)} layers (overlap = mean cos² of principal angles)"

    def _head(self) -> list[str]:
        return ["module", "k", "left overlap", "right overlap", "random left / right", "A₀ vs ∇ (step 0)", "B vs ∇"]

    def _rows(self) -> list[list[str]]:
        def fmt(x):
            return "—" if x is None else f"{x:.3f}"
        return [[n, str(d.k), fmt(overlap(d.left)), fmt(overlap(d.right)),
                 f"{fmt(d.random_left)} / {fmt(d.random_right)}", fmt(d.grad_a0), fmt(d.grad_b)]
                for n, d in self.items()]


class FactorWatch(Callback):
    """Keeps an adapter's factors at the start and end of a run (copies)."""

    def __init__(self, adapter: str) -> None:
        self.adapter, self.initial, self.final = adapter, {}, {}

    def on_train_begin(self, run: TrainRun) -> None:
        self.initial = {f.name: f for f in F.read(run.model, self.adapter)[1]}

    def on_train_end(self, run: TrainRun) -> None:
        self.final = {f.name: f for f in F.read(run.model, self.adapter)[1]}


class WeightWatch(Callback):
    """Keeps W_after − W_before of the named modules' weights over a run (as stored)."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.before, self.delta = names, {}, {}

    def on_train_begin(self, run: TrainRun) -> None:
        self.before = {n: run.model.get_submodule(n).weight.detach().clone() for n in self.names}

    def on_train_end(self, run: TrainRun) -> None:
        self.delta = {n: run.model.get_submodule(n).weight.detach() - w for n, w in self.before.items()}


def first_batch_gradients(model: torch.nn.Module, batches: Any, names: list[str],
                          device: torch.device) -> dict[str, torch.Tensor]:
    """∂L/∂W of the named modules' weights on the first batch of ``batches`` (as stored)."""
    batch = to_device(next(iter(batches.loader)), device)
    weights = {n: model.get_submodule(n).weight.requires_grad_(True) for n in names}
    model.train()  # as the loop trains
    loss = batches.loss(model, batch)
    grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(w)).detach() for (n, w), g in zip(weights.items(), grads)}


def compare(lora: FactorWatch, full: WeightWatch, gradients: dict[str, torch.Tensor] | None = None) -> Directions:
    """Per layer both arms adapted: subspace overlaps of the two updates, and of LoRA's factors with ∇."""
    result = Directions()
    for name, f in lora.final.items():
        if name not in full.delta or f.kind == "embedding":
            continue
        k = min(f.r, f.out_features, f.in_features)
        u_lora, _, v_lora = delta_svd(f)  # from the r × r core: LoRA's ΔW is never formed
        u_full, v_full = top_vectors(f.from_stored(full.delta[name]), k)
        left = principal_cosines(u_lora[:, :k], u_full)
        right = principal_cosines(v_lora[:, :k], v_full)
        grad_a0 = grad_b = None
        if gradients is not None and name in gradients:
            u_g, v_g = top_vectors(f.from_stored(gradients[name]), k)
            grad_a0 = overlap(principal_cosines(orthonormal(lora.initial[name].A.T), v_g))
            grad_b = overlap(principal_cosines(orthonormal(f.B), u_g))
        result[name] = LayerDirections(k, left, right, k / f.out_features, k / f.in_features, grad_a0, grad_b)
    return result
