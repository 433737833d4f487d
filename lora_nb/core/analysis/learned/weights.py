"""Weight summaries of an adapter: norms per module, a layer × module-type map, pooled matrices.

Nothing here forms a large ΔW densely: ‖ΔW‖_F comes from r × r Gram matrices and the
ΔW heatmap from block-averaged factors (block averaging is linear, so
``pool(B @ A) = pool_rows(B) @ pool_cols(A)`` exactly).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ....markup import code_spans
from ... import registry
from ...adapters import factors as F

MAX_SIZE = 256  # heatmap side after pooling
_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def _text_table(headers: list[str], rows: list[list[str]], limit: int = 60) -> str:
    """A fixed-width text table (at most ``limit`` rows, then a count of the rest)."""
    shown = [headers, *rows[:limit]]
    widths = [max(len(r[i]) for r in shown) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in shown]
    if len(rows) > limit:
        lines.append(f"… ({len(rows) - limit} more)")
    return "\n".join(lines)


class TableResult(dict):
    """A ``{module name: …}`` result shown as a table: text in terminals, HTML in notebooks."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []

    def _title(self) -> str:
        raise NotImplementedError

    def _head(self) -> list[str]:
        raise NotImplementedError

    def _rows(self) -> list[list[str]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return "\n".join([self._title(), _text_table(self._head(), self._rows()), *self.notes])

    def _repr_html_(self, limit: int = 60) -> str:
        esc, rows = html.escape, self._rows()
        head = "".join(f"<th>{esc(h)}</th>" for h in self._head())
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[:limit])
        more = f"<div>… ({len(rows) - limit} more)</div>" if len(rows) > limit else ""
        extra = "".join(f"<div>{code_spans(n)}</div>" for n in self.notes)
        return f"<div><b>{code_spans(self._title())}</b><table><tr>{head}</tr>{body}</table>{more}{extra}</div>"


def split_name(name: str, type_name: str = "") -> tuple[str, int | None, str]:
    """``model.layers.3.self_attn.q_proj`` → ``("model.layers.3", 3, "self_attn.q_proj")``."""
    m = _INDEX.search(name)
    if m is None:
        return "", None, name
    kind = name[m.end():] if m.end() < len(name) else ""
    return name[: m.end(1)], int(m.group(1)), kind or type_name or name


def delta_fro(f: F.Factors) -> float:
    """‖ΔW‖_F exactly, from r × r Gram matrices: ‖B A‖²_F = tr((BᵀB)(AAᵀ))."""
    a, b = f.A.double(), f.B.double()
    return abs(f.scaling) * math.sqrt(max(float(((b.T @ b) * (a @ a.T)).sum()), 0.0))


@dataclass(frozen=True)
class ModuleWeights:
    """Sizes of one module's adapter and of its base weight."""

    name: str
    type_name: str
    shape: tuple[int, int]  # out × in of ΔW
    r: int
    scaling: float
    a_norm: float
    b_norm: float
    delta_norm: float
    base_norm: float | None
    a_range: tuple[float, float]
    b_range: tuple[float, float]

    @property
    def ratio(self) -> float | None:
        """‖ΔW‖_F / ‖W‖_F."""
        return None if not self.base_norm else self.delta_norm / self.base_norm


@dataclass
class NormMap:
    """A layer × module-type grid of one value per module (NaN where there is none)."""

    rows: list[str]
    cols: list[str]
    z: np.ndarray
    names: list[list[str]]  # module name per cell ("" where none)
    value: str


class WeightSummary(TableResult):
    """``{module name: ModuleWeights}`` for one adapter, with a norm map and tables."""

    def __init__(self, adapter: str) -> None:
        super().__init__()
        self.adapter = adapter

    def _head(self) -> list[str]:
        return ["module", "out×in", "r", "‖A‖", "‖B‖", "‖ΔW‖", "‖ΔW‖/‖W‖", "B min..max"]

    def norm_map(self, value: str = "delta_norm") -> NormMap:
        """Layer × module-type grid of ``value`` (``delta_norm``, ``ratio``, ``a_norm`` or ``b_norm``)."""
        parts = {n: split_name(n, w.type_name) for n, w in self.items()}
        row_keys = sorted({p[0] for p in parts.values()}, key=_row_order)
        cols = list(dict.fromkeys(p[2] for p in parts.values()))
        z = np.full((len(row_keys), len(cols)), np.nan)
        names = [[""] * len(cols) for _ in row_keys]
        for name, (row, _, kind) in parts.items():
            i, j = row_keys.index(row), cols.index(kind)
            v = getattr(self[name], value)
            z[i, j] = np.nan if v is None else v
            names[i][j] = name
        prefix = _common_prefix(row_keys)
        labels = [k[len(prefix):] or k or "(model)" for k in row_keys]
        return NormMap(labels, cols, z, names, value)

    def _rows(self) -> list[list[str]]:
        def g(v: float | None) -> str:
            return "—" if v is None else f"{v:.4g}"

        return [[w.name, f"{w.shape[0]}×{w.shape[1]}", str(w.r), g(w.a_norm), g(w.b_norm), g(w.delta_norm),
                 g(w.ratio), f"{w.b_range[0]:.3g}..{w.b_range[1]:.3g}"] for w in self.values()]

    def _title(self) -> str:
        return f"adapter `{self.adapter}`: weights of {len(self)} modules"


def _row_order(key: str) -> tuple[str, int]:
    head, _, index = key.rpartition(".")
    return (head, int(index)) if index.isdigit() else (key, -1)


def _common_prefix(keys: list[str]) -> str:
    if len(keys) < 2:
        return ""
    prefix = keys[0][: len(keys[0]) - len(keys[0].rsplit(".", 1)[-1])]
    return prefix if all(k.startswith(prefix) for k in keys) else ""


def _base_norm(session: "registry.Session", layer, f: F.Factors) -> float | None:
    """‖W‖_F of the base weight, cached until the weight changes (base weights do not train)."""
    weight = F.base_weight(layer)
    if weight.is_meta:
        return None
    cache = session.base_norms
    key = F.weight_key(layer)
    hit = cache.get(f.name)
    if hit is None or hit[0] != key:
        hit = (key, float(F.base_matrix(layer, f).double().norm()))
        cache[f.name] = hit
    return hit[1]


def weights(model, adapter: str | None = None, layers: str | None = None) -> WeightSummary:
    """Per module: ‖A‖_F, ‖B‖_F, ‖ΔW‖_F (exact, low-rank), ‖ΔW‖_F/‖W‖_F and the range of A and B."""
    session = registry.require(model)
    adapter, fs = F.read(model, adapter, layers)
    summary = WeightSummary(adapter)
    for f in fs:
        layer = session.model.get_submodule(f.name)
        with F.one_thread():
            sizes = (float(f.A.double().norm()), float(f.B.double().norm()), delta_fro(f))
        summary[f.name] = ModuleWeights(
            f.name, type(layer.get_base_layer()).__name__, (f.out_features, f.in_features), f.r, f.scaling,
            *sizes, _base_norm(session, layer, f), (float(f.A.min()), float(f.A.max())),
            (float(f.B.min()), float(f.B.max())),
        )
    zero = [w.name for w in summary.values() if w.delta_norm == 0.0]
    if zero:
        summary.notes.append(f"ΔW = 0 in {len(zero)} of {len(summary)} modules (a factor is all zeros: "
                             "a fresh adapter, or one that never trained)")
    return summary


def pool(m: torch.Tensor, dim: int, max_size: int = MAX_SIZE) -> torch.Tensor:
    """Block-average ``m`` along ``dim`` down to at most ``max_size`` entries (unchanged if already small)."""
    n = m.shape[dim]
    if n <= max_size:
        return m
    size = math.ceil(n / max_size)
    groups = torch.arange(n, device=m.device) // size
    bins = int(groups[-1]) + 1
    moved = m.movedim(dim, 0)
    out = torch.zeros((bins, *moved.shape[1:]), dtype=m.dtype, device=m.device).index_add_(0, groups, moved)
    counts = torch.bincount(groups, minlength=bins).to(m.dtype)
    return (out / counts.reshape(-1, *([1] * (moved.dim() - 1)))).movedim(0, dim)


@dataclass
class ModuleMatrices:
    """One module's A, B and ΔW for heatmaps (block-averaged to ≤ ``MAX_SIZE`` a side) and their values."""

    name: str
    shape: tuple[int, int]  # out × in of ΔW before pooling
    r: int
    A: np.ndarray  # r × in (pooled)
    B: np.ndarray  # out × r (pooled)
    delta: np.ndarray  # out × in (pooled; exact block averages of s·B·A)
    a_values: np.ndarray = field(repr=False)  # A's entries (a sample when huge), for histograms
    b_values: np.ndarray = field(repr=False)

    @property
    def pooled(self) -> bool:
        return self.delta.shape != self.shape


def _sample(t: torch.Tensor, limit: int = 200_000) -> np.ndarray:
    flat = t.reshape(-1)
    step = max(1, flat.numel() // limit)
    return flat[::step].float().cpu().numpy()


def matrices(model, module: str, adapter: str | None = None, max_size: int = MAX_SIZE) -> ModuleMatrices:
    """Heatmap matrices of ``module``'s A, B and ΔW = s·B·A, pooled without forming a large ΔW."""
    f = F.one(model, module, adapter)
    with F.one_thread():
        a = pool(f.A.double(), 1, max_size)  # r × ≤max
        b = pool(f.B.double(), 0, max_size)  # ≤max × r
        delta = (f.scaling * b @ a).cpu().numpy()
    return ModuleMatrices(
        f.name, (f.out_features, f.in_features), f.r, pool(a, 0, max_size).cpu().numpy(),
        pool(b, 1, max_size).cpu().numpy(), delta, _sample(f.A), _sample(f.B),
    )
