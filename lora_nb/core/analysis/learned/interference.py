"""Interference of several adapters before they are combined: per module, how their updates overlap.

Two measures per pair of adapters and module: the cosine between their ΔWs (⟨ΔW₁, ΔW₂⟩_F from
r × r traces, never dense) and the mean subspace similarity φ of their input directions (Hu et al.
2021, §7.2, as in ``similarity``). Cosine near 1: summing them doubles a shared direction; near 0:
they barely interfere.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from ....errors import OptionError, TargetError
from ... import lowrank, registry
from ...adapters import factors as F
from .spectra import phi, right_vectors
from .weights import TableResult


class Interference(TableResult):
    """``{module: cos matrix (n × n)}`` of adapters ``names``, with ``phi[module][(i, j)]`` the mean φ of a pair."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
        self.phi: dict[str, dict[tuple[int, int], float]] = {}

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return list(combinations(range(len(self.names)), 2))

    def pair_label(self, pair: tuple[int, int]) -> str:
        return f"{self.names[pair[0]]}·{self.names[pair[1]]}"

    def _title(self) -> str:
        return f"interference of adapters {', '.join(f'`{n}`' for n in self.names)} ({len(self)} modules)"

    def _head(self) -> list[str]:
        labels = [self.pair_label(p) for p in self.pairs]
        return ["module"] + [h for label in labels for h in (f"cos ΔW {label}", f"mean φ {label}")]

    def _rows(self) -> list[list[str]]:
        return [[n] + [c for p in self.pairs for c in (f"{cos[p]:+.3f}", f"{self.phi[n][p]:.3f}")]
                for n, cos in self.items()]


def interference(model, adapters, layers: str | None = None) -> Interference:
    """Per module shared by all ``adapters`` (two or more): cos(ΔWᵢ, ΔWⱼ) and mean φ of each pair."""
    names = [a.strip() for a in adapters.split(",")] if isinstance(adapters, str) else list(adapters)
    if len(names) < 2:
        raise OptionError("interference needs two or more adapters, e.g. `adapters=[\"first\", \"second\"]`")
    session = registry.require(model)
    for name in names:
        session.check_adapter(name)
    result = Interference(names)
    with session.lock, F.one_thread():
        modules = F.select(session, names[0], layers)
        for module, pairs in lowrank.shared_pairs(modules, names).items():
            result[module] = lowrank.cosines(pairs).numpy()
            vectors = [right_vectors(p.A) for p in pairs]
            result.phi[module] = {(i, j): float(np.mean(phi(vectors[i], vectors[j]))) for i, j in result.pairs}
    if not result:
        raise TargetError(f"adapters {', '.join(names)} share no adapted module")
    return result
