"""How ΔW's spectra evolved over a run: ranks per module × recorded step, from ``run.spectra_history``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ....errors import TrainingError
from ... import registry
from ...training.longrun.spectra_history import SpectraHistory
from .spectra import layer_stats

MEASURES = ("effective", "energy")  # exp(entropy) of the spectrum | smallest rank holding `energy` of ‖ΔW‖²_F


def rank_at_energy(values: np.ndarray, energy: float = 0.9) -> int:
    """The smallest k whose top-k singular values hold ``energy`` of Σσ² (0 for ΔW = 0)."""
    sq = np.asarray(values, dtype=np.float64) ** 2
    total = sq.sum()
    if total <= 0:
        return 0
    return int(np.searchsorted(np.cumsum(sq) / total, energy - 1e-12) + 1)


@dataclass(frozen=True)
class RankMap:
    """``ranks[i, j]``: the rank measure of module ``modules[i]`` at recorded step ``steps[j]``."""

    modules: list[str]
    steps: list[int]
    ranks: np.ndarray
    label: str


def rank_map(history: SpectraHistory, measure: str = "effective", energy: float = 0.9) -> RankMap:
    """Module × step map of effective rank, or of the rank holding ``energy`` of ΔW's energy."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}; got {measure!r}")
    rank = ((lambda v: layer_stats(v).effective_rank) if measure == "effective"
            else (lambda v: float(rank_at_energy(v, energy))))
    ranks = np.array([[rank(v) for v in history.values[m]] for m in history.modules]).reshape(
        len(history.modules), len(history.steps))
    label = "effective rank" if measure == "effective" else f"rank holding {energy:.0%} of ‖ΔW‖²"
    return RankMap(history.modules, list(history.steps), ranks, label)


def values_over_steps(history: SpectraHistory, module: str) -> np.ndarray:
    """σ₁…σᵣ of ``module`` at each recorded step: an array steps × r."""
    if module not in history.values:
        raise KeyError(f"no recorded spectra for `{module}`")
    return np.stack(history.values[module])


def spectra_history(model) -> SpectraHistory:
    """The spectra recorded by the model's current (or last) training run."""
    run = registry.require(model).run
    if run is None:
        raise TrainingError("this model has not been trained yet: its spectra history is empty "
                            "(`lora_nb.train(model)`)")
    if not len(run.spectra_history):
        raise TrainingError("the last run recorded no spectra (it trained in several processes, with "
                            "`spectra_every=0`, or has not finished a step yet)")
    return run.spectra_history
