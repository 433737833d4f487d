"""Singular values of many LoRA updates ΔW = s·B·A at once, exact, without forming ΔW (torch and numpy only).

The singular values of s·B·A depend on B only through its Gram matrix BᵀB and on A only through
AAᵀ (both r × r), computed in float64 (one matrix product per factor, through one reusable buffer).
Same-shaped modules then go through one batched pass: with BᵀB = R_BᵀR_B and AAᵀ = R_AᵀR_A (batched
r × r Cholesky; the eigen-root where a Gram is singular), B·A = Q_B·R_B·R_Aᵀ·Q_Aᵀ for orthonormal Q_B, Q_A,
so ΔW's singular values are s × those of the r × r product R_B·R_Aᵀ (one batched ``svdvals``). A singular
value σᵢ is exact to about 1e-16·(σ₁/σᵢ)² relative.

Training imports this module (to record spectra over a run), so it knows no analysis and no peft:
it reads a LoRA layer's factors by their attribute names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import LoraNBError


@contextmanager
def one_thread() -> Iterator[None]:
    """Run many tiny CPU linear-algebra calls on one thread (this thread's setting, restored after).

    r × r problems and thin factors are far too small to share: with 2 OpenMP threads on a busy
    2-core machine, 224 Llama-7B modules took 9–27 s instead of 0.5 s (every call waits for a
    descheduled worker).
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class Pair(NamedTuple):
    """One module's factors as matrices, ΔW = scaling · B @ A (views of the live parameters, not copies)."""

    A: torch.Tensor  # r × in
    B: torch.Tensor  # out × r
    scaling: float


def layer_pair(layer: nn.Module, adapter: str, name: str = "") -> Pair | None:
    """``layer``'s factors for ``adapter`` as matrices; None where it has none or ΔW is not B·A."""
    if adapter in getattr(layer, "lora_embedding_A", {}):
        a, b = layer.lora_embedding_A[adapter], layer.lora_embedding_B[adapter]
    elif adapter in getattr(layer, "lora_A", {}):
        if getattr(layer.get_base_layer(), "groups", 1) > 1:
            return None
        a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    else:
        return None
    if a.is_meta or b.is_meta:
        raise LoraNBError(f"the `{adapter}` factors of `{name}` are on the meta device (never materialized)")
    return Pair(a.detach().reshape(a.shape[0], -1), b.detach().reshape(b.shape[0], -1), float(layer.scaling[adapter]))


def work_device(t: torch.Tensor) -> torch.device:
    """Where float64 linear algebra on ``t`` runs (MPS has neither float64 nor a full eigensolver)."""
    return torch.device("cpu") if t.device.type == "mps" else t.device


def _grams(mats: Sequence[torch.Tensor], rows_first: bool) -> torch.Tensor:
    """Float64 Grams of same-shaped factors: MᵀM for out × r matrices (``rows_first``), else MMᵀ for r × in ones.

    Each factor is copied into one reusable float64 buffer as it is laid out (no transposing copy) and
    multiplied by its own transpose: an out × r factor through numpy's ``matmul``, which runs ``MᵀM`` of a
    contiguous buffer as a symmetric rank-k update (half the multiplications; 1.7× faster than ``torch.mm``
    on this 2-core CPU), an r × in factor through one ``torch.mm`` (several times faster on CPUs than a
    batched ``bmm`` of float64). Off the CPU, ``torch.mm`` throughout.
    """
    n, dev = len(mats), work_device(mats[0])
    r, length = (mats[0].shape[1], mats[0].shape[0]) if rows_first else mats[0].shape
    gram = torch.empty(n, r, r, dtype=torch.float64, device=dev)
    if rows_first and dev.type == "cpu":
        buf = torch.empty(length, r, dtype=torch.float64)
        rows, out = buf.numpy(), gram.numpy()
        for k, m in enumerate(mats):
            buf.copy_(m)
            np.matmul(rows.T, rows, out=out[k])
        return gram
    buf = torch.empty(r, length, dtype=torch.float64, device=dev)
    for k, m in enumerate(mats):
        buf.copy_(m.T if rows_first else m)
        torch.mm(buf, buf.T, out=gram[k])
    return gram


def _root(gram: torch.Tensor) -> torch.Tensor:
    """R with RᵀR = ``gram`` (batched, PSD): the Cholesky factor, or for a singular Gram (a zero B at the
    start of training, a rank-deficient factor) the eigen-root, where tiny negative eigenvalues from rounding
    count as 0. Both are backward stable, so ΔW's singular values come out equally exact either way."""
    lower, info = torch.linalg.cholesky_ex(gram)
    root = lower.mT.contiguous()
    failed = info != 0
    if bool(failed.any()):
        values, vectors = torch.linalg.eigh(gram[failed])
        root[failed] = values.clamp_min(0).sqrt()[..., :, None] * vectors.mT
    return root


def _group_values(pairs: Sequence[Pair]) -> torch.Tensor:
    """Singular values (n × r, descending, float64) of same-shaped pairs."""
    root_b = _root(_grams([p.B for p in pairs], rows_first=True))
    root_a = _root(_grams([p.A for p in pairs], rows_first=False))
    scale = torch.tensor([abs(p.scaling) for p in pairs], dtype=torch.float64, device=root_b.device)
    return torch.linalg.svdvals(root_b @ root_a.mT) * scale[:, None]


def svdvals_many(pairs: Sequence[Pair]) -> list[torch.Tensor]:
    """ΔW's singular values per pair (descending, float64 on the CPU, length min(r, out, in)), in order."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault((tuple(p.A.shape), tuple(p.B.shape), work_device(p.A)), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    for (a_shape, b_shape, _), idx in groups.items():
        values = _group_values([pairs[i] for i in idx]).cpu()
        keep = min(a_shape[0], a_shape[1], b_shape[0])
        for k, i in enumerate(idx):
            out[i] = values[k, :keep]
    return out


def inner(p: Pair, q: Pair) -> float:
    """⟨ΔW_p, ΔW_q⟩_F = s_p·s_q·tr((B_pᵀB_q)(A_qA_pᵀ)), from r × r products only (never the dense ΔWs)."""
    dev = work_device(p.A)
    ap, bp = p.A.to(dev, torch.float64), p.B.to(dev, torch.float64)
    aq, bq = q.A.to(dev, torch.float64), q.B.to(dev, torch.float64)
    return float(p.scaling * q.scaling * torch.trace((bp.T @ bq) @ (aq @ ap.T)))


def gram_of_updates(pairs: Sequence[Pair]) -> torch.Tensor:
    """The matrix of ⟨ΔWᵢ, ΔWⱼ⟩_F for ΔWs of the same shape (float64, n × n)."""
    n = len(pairs)
    g = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i, n):
            g[i, j] = g[j, i] = inner(pairs[i], pairs[j])
    return g


def cosines(pairs: Sequence[Pair]) -> torch.Tensor:
    """cos(ΔWᵢ, ΔWⱼ) = ⟨ΔWᵢ, ΔWⱼ⟩ / (‖ΔWᵢ‖‖ΔWⱼ‖) (0 where an update is zero)."""
    g = gram_of_updates(pairs)
    norms = g.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    return torch.where(denom > 0, g / denom.where(denom > 0, torch.ones_like(denom)), torch.zeros_like(g))


def relative_error(approx: Pair, parts: Sequence[Pair], weights: Sequence[float]) -> float:
    """‖ΔW_approx − Σ wᵢ ΔWᵢ‖_F / ‖Σ wᵢ ΔWᵢ‖_F, exactly, from low-rank traces."""
    coef = torch.tensor([*weights, -1.0], dtype=torch.float64)
    g = gram_of_updates([*parts, approx])
    target = coef[:-1] @ g[:-1, :-1] @ coef[:-1]
    diff = coef @ g @ coef
    return float(diff.clamp_min(0).sqrt() / target.sqrt()) if target > 0 else float(diff.clamp_min(0).sqrt())


def shared_pairs(modules, adapters: Sequence[str]) -> dict[str, list[Pair]]:
    """``{module name: [Pair per adapter]}`` for the ``(name, layer)`` modules where every adapter has a ΔW."""
    found = {}
    for name, layer in modules:
        pairs = [layer_pair(layer, a, name) for a in adapters] if hasattr(layer, "lora_A") else [None]
        if all(p is not None for p in pairs):
            found[name] = pairs
    return found
