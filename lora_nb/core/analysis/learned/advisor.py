"""Rank advice: per module, the rank that holds a share of ΔW's energy, as a peft ``rank_pattern``.

The energy of ΔW is ‖ΔW‖²_F = Σσᵢ²; the advised rank of a module is the smallest k whose top-k
singular values hold ``energy`` of it. The advice is kept on the session, so that
``attach(model, rank_pattern="advised")`` starts a new adapter with exactly those ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ....errors import OptionError
from ... import registry
from ...training.capacity import RULE_TEXT, Capacity
from .history import rank_at_energy
from .spectra import spectra
from .weights import TableResult


@dataclass(frozen=True)
class ModuleAdvice:
    rank: int  # advised rank
    r: int  # the adapter's rank there now
    size: int  # in + out: parameters per unit of rank


class Advice(TableResult):
    """``{module: ModuleAdvice}`` with a global ``r``, a per-module ``rank_pattern`` and their parameter counts."""

    def __init__(self, adapter: str, energy: float) -> None:
        super().__init__()
        self.adapter, self.energy = adapter, energy
        self.tokens = 0  # supervised tokens the adapter's runs trained on (the capacity gauge)

    def capacity(self, which: str = "now") -> Capacity:
        """The capacity gauge with the parameters of ``which`` ("now", "global", "pattern")."""
        return Capacity(self.params(which), self.tokens)

    @property
    def rank_pattern(self) -> dict[str, int]:
        return {name: a.rank for name, a in self.items()}

    @property
    def global_r(self) -> int:
        """The smallest single rank that holds ``energy`` in every module."""
        return max(a.rank for a in self.values())

    def params(self, which: str = "pattern") -> int:
        """LoRA parameters with the ranks of ``which``: "now", "global" or "pattern"."""
        rank = {"now": lambda a: a.r, "global": lambda a: self.global_r, "pattern": lambda a: a.rank}[which]
        return sum(rank(a) * a.size for a in self.values())

    def _title(self) -> str:
        now, glob, pattern = self.params("now"), self.params("global"), self.params("pattern")
        return (f"rank advice for adapter `{self.adapter}` ({self.energy:.0%} of ‖ΔW‖² kept): global r={self.global_r} "
                f"({glob:,} parameters), per-module pattern {pattern:,} parameters, now {now:,} "
                f"({now - pattern:,} saved by the pattern)")

    def _head(self) -> list[str]:
        return ["module", "r now", "advised rank", "parameters now", "advised"]

    def _rows(self) -> list[list[str]]:
        return [[n, str(a.r), str(a.rank), f"{a.r * a.size:,}", f"{a.rank * a.size:,}"] for n, a in self.items()]


def advise(model, energy: float = 0.9, adapter: str | None = None, layers: str | None = None) -> Advice:
    """Per module, the rank holding ``energy`` of ΔW's energy; kept as ``session.advice`` for ``attach``."""
    if not 0.0 < energy <= 1.0:
        raise OptionError(f"energy must be in (0, 1]; got {energy:g}")
    session = registry.require(model)
    result = spectra(model, adapter, layers=layers)
    advice = Advice(result.adapter, energy)
    for name, values in result.items():
        out, inp, r = result.shapes[name]
        advice[name] = ModuleAdvice(max(1, rank_at_energy(values, energy)), r, out + inp)
    runs = session.records.get(result.adapter, {}).get("runs", [])
    advice.tokens = sum(int(run.get("supervised_tokens") or 0) for run in runs)
    gauge = [f"{advice.capacity().line()}; with the advised pattern: {advice.capacity('pattern').ratio:.3g} per token"
             if advice.tokens else "capacity: no supervised tokens counted (train on token data with labels first)",
             RULE_TEXT]
    advice.notes = [*result.notes, *gauge]
    session.advice = advice
    return advice
