"""One callback protocol for every short-run analysis (``vs_full``, ``lr_sweep``, ``placement``).

A ``ShortRunCallback`` is a training callback on each of the analysis' runs (its step hooks follow the run that is
training) that also hears what only the analysis knows: the plan, each run as it begins and ends, slow work between
runs, and the result. Views (live or text) implement the hooks they need; the rest do nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...training.callbacks import Callback


class ShortRunCallback(Callback):
    """A training callback that also hears the plan, each run as it begins and ends, and the result."""

    def on_begin(self, plan: str) -> None:
        """Once, before anything trains: ``plan`` says in one line what the runs train."""

    def on_stage(self, text: str) -> None:
        """Work between runs that takes a while (warm-up, directions), in a few words."""

    def on_run_begin(self, arm: str, index: int, total: int, lr: float | None = None,
                     size: int | None = None) -> None:
        """Before run ``index`` (0-based) of ``total``: ``arm`` names what trains ("lora", "full", "attention",
        "all"), at learning rate ``lr``; ``size``: the training-set size of a data-size sweep, else None."""

    def on_run_end(self, measured: Any) -> None:
        """After each run, with what it measured (a sweep's ``ShortRun``, a comparison's ``Arm``)."""

    def on_result(self, result: Any) -> None:
        """Once, at the end (also after a stop: the result holds the runs that finished)."""


def listeners(callbacks: Iterable[Callback]) -> list[ShortRunCallback]:
    """The callbacks among ``callbacks`` that hear the short-run hooks."""
    return [cb for cb in callbacks if isinstance(cb, ShortRunCallback)]
