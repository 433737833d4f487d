"""Singular-value spectra of LoRA updates, exact and fast, and the LoRA paper's analyses.

ΔW = s·B·A never needs a dense SVD: with thin QRs B = Q_B R_B and Aᵀ = Q_A R_A,
ΔW = Q_B (s R_B R_Aᵀ) Q_Aᵀ, so ΔW's singular values (and vectors) come from the
small core s·R_B·R_Aᵀ. The base spectra (W, W+ΔW) need real SVDs: they are computed
per layer on the layer's device, lazily, and cached until the weights change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ....errors import TargetError
from ... import lowrank, registry
from ...adapters import factors as F
from .intruders import find_intruders
from .weights import TableResult

FULL_SVD_MAX = 1024  # a base layer with min(out, in) above this gets a top-k randomized SVD
TOP_K = 64
Progress = Callable[[int, int, str], None]  # (done, total, module name)


def _core(f: F.Factors, vectors: bool = False):
    """``(Q_B, core, Q_A)`` with ΔW = Q_B · core · Q_Aᵀ, in float64 (Qs are None unless ``vectors``)."""
    dev = F.work_device(f.A)
    b, at = f.B.to(dev, torch.float64), f.A.T.to(dev, torch.float64)
    if vectors:
        qb, rb = torch.linalg.qr(b)
        qa, ra = torch.linalg.qr(at)
    else:
        qb = qa = None
        rb, ra = torch.linalg.qr(b, mode="r")[1], torch.linalg.qr(at, mode="r")[1]
    return qb, f.scaling * rb @ ra.T, qa


def delta_values(f: F.Factors) -> np.ndarray:
    """ΔW's singular values, descending, length min(r, out, in): an r × r SVD, exact."""
    return torch.linalg.svdvals(_core(f)[1]).cpu().numpy()


def delta_svd(f: F.Factors) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(U, S, V)`` with ΔW = U diag(S) Vᵀ (float64, out × k, k, in × k), via the small core."""
    qb, core, qa = _core(f, vectors=True)
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    return qb @ u, s, qa @ vh.T


@dataclass(frozen=True)
class LayerStats:
    """Shape measures of one spectrum."""

    effective_rank: float  # exp(entropy of σ/Σσ) (Roy & Vetterli 2007)
    stable_rank: float  # Σσ² / σ₁²
    energy: np.ndarray  # cumulative Σ_{i≤k} σ² / Σσ², k = 1..n

    def energy_top(self, k: int) -> float:
        """Fraction of ‖ΔW‖²_F captured by the top ``k`` singular values."""
        return float(self.energy[min(k, len(self.energy)) - 1]) if len(self.energy) else 0.0


def layer_stats(values: np.ndarray) -> LayerStats:
    """Effective rank, stable rank and cumulative energy of singular values ``values``."""
    total = float(values.sum())
    if total <= 0.0:
        return LayerStats(0.0, 0.0, np.zeros_like(values))
    p = values[values > 0] / total
    sq = values.astype(np.float64) ** 2
    return LayerStats(float(np.exp(-(p * np.log(p)).sum())), float(sq.sum() / sq[0]), np.cumsum(sq) / sq.sum())


@dataclass(frozen=True)
class BaseSpectrum:
    """Singular values of the base weight W and of W+ΔW (top ``len`` only when not ``exact``)."""

    w: np.ndarray
    w_delta: np.ndarray
    exact: bool


class Spectra(TableResult):
    """``{module name: ΔW's singular values (descending)}`` with per-layer stats and optional base spectra."""

    def __init__(self, adapter: str) -> None:
        super().__init__()
        self.adapter = adapter
        self.shapes: dict[str, tuple[int, int, int]] = {}  # out, in, r
        self.stats: dict[str, LayerStats] = {}
        self.base: dict[str, BaseSpectrum] | None = None

    def _head(self) -> list[str]:
        head = ["module", "out×in", "r", "σ₁", "‖ΔW‖_F", "eff. rank", "stable rank", "top-1 energy"]
        return head + (["σ₁(W)", "σ₁(W+ΔW)"] if self.base is not None else [])

    def _rows(self) -> list[list[str]]:
        rows = []
        for name, values in self.items():
            out, inp, r = self.shapes[name]
            st = self.stats[name]
            row = [name, f"{out}×{inp}", str(r), f"{values[0]:.4g}" if len(values) else "—",
                   f"{math.sqrt(float((values ** 2).sum())):.4g}", f"{st.effective_rank:.2f}",
                   f"{st.stable_rank:.2f}", f"{st.energy_top(1):.2f}"]
            if self.base is not None:
                b = self.base[name]
                row += [f"{b.w[0]:.4g}", f"{b.w_delta[0]:.4g}"]
            rows.append(row)
        return rows

    def _title(self) -> str:
        return f"adapter `{self.adapter}`: singular values of ΔW in {len(self)} modules"


def _randomized_svdvals(m: torch.Tensor, k: int, niter: int = 6) -> torch.Tensor:
    """Top-``k`` singular values by randomized subspace iteration (Halko et al. 2011).

    As ``torch.svd_lowrank``, but with a private generator: it never moves the global RNG
    that a training thread may be using.
    """
    q = min(k + 16, *m.shape)
    gen = torch.Generator(device=m.device).manual_seed(0)
    y = m @ torch.randn(m.shape[1], q, generator=gen, device=m.device, dtype=m.dtype)
    for _ in range(niter):
        y = m @ (m.T @ torch.linalg.qr(y)[0])
    basis = torch.linalg.qr(y)[0]
    return torch.linalg.svdvals(basis.T @ m)[:k]


def _svdvals(m: torch.Tensor, top_k: int | None) -> tuple[np.ndarray, bool]:
    """All singular values when affordable, else the top ``top_k`` (randomized); and whether exact."""
    n = min(m.shape)
    if m.device.type == "mps":
        m = m.cpu()
    if (top_k is None and n <= FULL_SVD_MAX) or (top_k is not None and top_k >= n):
        return torch.linalg.svdvals(m).cpu().numpy(), True
    return _randomized_svdvals(m, top_k or TOP_K).cpu().numpy(), False


def _base_spectrum(session, layer, f: F.Factors, adapter: str, top_k: int | None) -> BaseSpectrum:
    """W and W+ΔW spectra of one layer, from the session's cache when the weights did not change."""
    cache = session.base_spectra
    w_key = (F.weight_key(layer), top_k)
    wd_key = (w_key, F.adapter_key(layer, adapter))
    w_hit, wd_hit = cache.get((f.name, "W")), cache.get((f.name, adapter))
    if w_hit is None or w_hit[0] != w_key or wd_hit is None or wd_hit[0] != wd_key:
        w = F.base_matrix(layer, f)
        if w_hit is None or w_hit[0] != w_key:
            w_hit = cache[(f.name, "W")] = (w_key, _svdvals(w, top_k))
        delta = f.scaling * f.B.to(w.device, w.dtype) @ f.A.to(w.device, w.dtype)
        wd_hit = cache[(f.name, adapter)] = (wd_key, _svdvals(w + delta, top_k))
    (w_vals, exact), (wd_vals, _) = w_hit[1], wd_hit[1]
    return BaseSpectrum(w_vals, wd_vals, exact)


def spectra(model, adapter: str | None = None, base: bool = False, layers: str | None = None,
            top_k: int | None = None, progress: Progress | None = None) -> Spectra:
    """Singular values of ΔW = s·B·A per adapted module, exact, from r × r Grams (same-shaped modules batched).

    ``adapter``: default the active one. ``layers``: regex on module names. ``base=True`` adds
    the spectra of W and W+ΔW (dense SVDs on the layer's device, cached; the top ``top_k`` by a
    randomized SVD when min(out, in) > 1024 or ``top_k`` is given). ``progress(done, total, name)``
    is called after each base layer.
    """
    session = registry.require(model)
    adapter = F.resolve_adapter(session, adapter)
    result = Spectra(adapter)
    with session.lock, F.one_thread():  # the training loop steps under the lock: never a torn read
        pairs = {n: p for n, m in F.select(session, adapter, layers) if (p := lowrank.layer_pair(m, adapter, n))}
        values = lowrank.svdvals_many(list(pairs.values()))
    for (name, p), v in zip(pairs.items(), values):
        result[name] = v.numpy()
        result.shapes[name] = (p.B.shape[0], p.A.shape[1], p.A.shape[0])
        result.stats[name] = layer_stats(result[name])
    if getattr(session.peft.peft_config[adapter], "use_dora", False):
        result.notes.append("DoRA adapter: these are the values of s·B·A; its magnitude vector rescales W+ΔW too")
    if all(not len(v) or v[0] == 0 for v in result.values()):
        result.notes.append("ΔW is zero everywhere: a factor is still all zeros (fresh adapter, or never trained)")
    if base:
        fs = F.read(model, adapter, layers)[1]
        result.base = {}
        for i, f in enumerate(fs, 1):
            result.base[f.name] = _base_spectrum(session, session.model.get_submodule(f.name), f, adapter, top_k)
            if progress is not None:
                progress(i, len(fs), f.name)
        approx = [n for n, b in result.base.items() if not b.exact]
        if approx:
            k = len(result.base[approx[0]].w)
            result.notes.append(f"W, W+ΔW: top-{k} singular values only (randomized SVD) in {len(approx)} of "
                                f"{len(fs)} modules, where a full SVD is too costly")
    return result


class Similarity(TableResult):
    """``{module name: φ matrix (r_a × r_b)}``: subspace similarity of two adapters (Hu et al. 2021, §7.2)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__()
        self.a, self.b = a, b

    def _head(self) -> list[str]:
        return ["module", "r_a×r_b", "φ(1,1)", "mean φ"]

    def _rows(self) -> list[list[str]]:
        return [[n, f"{p.shape[0]}×{p.shape[1]}", f"{p[0, 0]:.3f}", f"{p.mean():.3f}"] for n, p in self.items()]

    def _title(self) -> str:
        return f"subspace similarity φ of adapters `{self.a}` and `{self.b}` ({len(self)} modules)"


def right_vectors(a: torch.Tensor) -> torch.Tensor:
    """Right singular vectors of the factor ``a`` (r × in) as rows (k × in), float64."""
    return torch.linalg.svd(a.to(F.work_device(a), torch.float64), full_matrices=False)[2]


def phi(va: torch.Tensor, vb: torch.Tensor) -> np.ndarray:
    """φ(i, j) = ‖U_aᵢᵀ U_bⱼ‖²_F / min(i, j) for right-singular-vector rows ``va``, ``vb``."""
    sq = (va @ vb.to(va.device).T) ** 2
    overlap = sq.cumsum(0).cumsum(1)
    i = torch.arange(1, sq.shape[0] + 1, device=sq.device, dtype=sq.dtype)
    j = torch.arange(1, sq.shape[1] + 1, device=sq.device, dtype=sq.dtype)
    return (overlap / torch.minimum(i[:, None], j[None, :])).cpu().numpy()


def similarity(model, a: str, b: str, layers: str | None = None, other=None) -> Similarity:
    """φ(i, j) between adapters ``a`` and ``b`` per module they share (``b`` from ``other`` if given)."""
    a, fa = F.read(model, a, layers)
    b, fb = F.read(other if other is not None else model, b, layers)
    second = {f.name: f for f in fb}
    result = Similarity(a, b)
    with F.one_thread():
        for f in fa:
            g = second.get(f.name)
            if g is not None and g.in_features == f.in_features:
                result[f.name] = phi(right_vectors(f.A), right_vectors(g.A))
    if not result:
        raise TargetError(f"adapters `{a}` and `{b}` share no module with the same input size")
    if any(not bool(f.A.any()) or not bool(second[f.name].A.any()) for f in fa if f.name in result):
        result.notes.append("A is all zeros in some modules (fresh embedding adapter): φ is meaningless there")
    return result


class PerModule(TableResult):
    """``{module name: value}`` from one analysis, with a text table."""

    def __init__(self, title: str, column: str) -> None:
        super().__init__()
        self.title, self.column = title, column

    def _title(self) -> str:
        return self.title

    def _head(self) -> list[str]:
        return ["module", self.column]

    def _rows(self) -> list[list[str]]:
        return [[n, f"{v:.4g}" if isinstance(v, float) else str(v)] for n, v in self.items()]


def _layers_and_factors(model, adapter, layers):
    session = registry.require(model)
    adapter, fs = F.read(model, adapter, layers)
    return adapter, [(session.model.get_submodule(f.name), f) for f in fs]


def amplification(model, adapter: str | None = None, layers: str | None = None) -> PerModule:
    """‖ΔW‖_F / ‖U_rᵀ W V_r‖_F per module (Hu et al. 2021, §7.3); U_r, V_r: ΔW's singular vectors.

    How strongly ΔW amplifies directions that W barely uses (0 where ΔW = 0).
    """
    adapter, pairs = _layers_and_factors(model, adapter, layers)
    result = PerModule(f"amplification factor of adapter `{adapter}`", "‖ΔW‖/‖UᵀWV‖")
    for layer, f in pairs:
        with F.one_thread():
            u, s, v = delta_svd(f)
        keep = s > s[0] * 1e-6 if len(s) and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
        if not bool(keep.any()):
            result[f.name] = 0.0
            continue
        u, v = u[:, keep], v[:, keep]
        w = F.base_matrix(layer, f).to(u.device, torch.float64)
        result[f.name] = float(s.norm() / (u.T @ w @ v).norm())
    return result


def intruders(model, adapter: str | None = None, k: int = 10, eps: float = 0.5, layers: str | None = None,
              progress: Progress | None = None) -> PerModule:
    """Per module, how many of W+ΔW's top-``k`` left singular vectors have best |cos| < ``eps`` with W's.

    Intruder dimensions (Shuttleworth et al. 2024): new directions the update brought in.
    ``result.detail[name]`` holds each top vector's best |cosine|. Needs full float64 SVDs of W and W+ΔW
    (``intruders.find_intruders``, which the dial behind ``--metric`` scales).
    """
    adapter, pairs = _layers_and_factors(model, adapter, layers)
    result = PerModule(f"intruder dimensions of adapter `{adapter}` (top {k}, ε = {eps})", "intruders")
    result.detail = {}
    for i, (layer, f) in enumerate(pairs, 1):
        found = find_intruders(layer, f, k, eps)  # the same float64 detection the dial (`--metric`) scales
        result.detail[f.name] = found.best_cos
        result[f.name] = found.count
        if progress is not None:
            progress(i, len(pairs), f.name)
    return result
