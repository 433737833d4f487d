"""The best evaluation of a run (``run.best``), early stopping (``patience``) and putting the best adapter back.

``BestTracker`` runs with every run that evaluates: ``run.best`` becomes ``{"step", "eval_loss"}`` of
the lowest eval loss so far (None before any evaluation). With ``patience=N`` the run stops after N
evaluations in a row that did not improve on the best by more than ``min_delta``; with
``restore_best`` a CPU copy of the adapter is kept at each new best and copied back when the run
ends, and the run's message says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from ..run import TrainRun


class BestTracker(Callback):
    """Keeps ``run.best`` current; stops the run on lost patience; restores the best adapter at the end."""

    def __init__(self, params: list[torch.nn.Parameter], lock: Any, patience: int | None = None,
                 min_delta: float = 0.0, restore_best: bool = False) -> None:
        self.params, self.lock = params, lock
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.bad = 0  # evaluations since the last improvement
        self.best_values: list[torch.Tensor] | None = None
        self.stopped_early = False

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        loss = record["eval_loss"]
        best = run.best
        if best is None or loss < best["eval_loss"] - self.min_delta:
            run.best = {"step": record["step"], "eval_loss": loss}
            self.bad = 0
            if self.restore_best:
                with self.lock, torch.no_grad():
                    self.best_values = [p.detach().to("cpu", copy=True) for p in self.params]
            return
        self.bad += 1
        if self.patience is not None and self.bad >= self.patience and run.step < run.max_steps:
            self.stopped_early = True
            run.stop_reason = (f"stopped early at step {run.step}/{run.max_steps}: no eval-loss improvement "
                               f"> {self.min_delta:g} in {self.bad} evaluations; best eval loss "
                               f"{run.best['eval_loss']:.4g} at step {run.best['step']}")
            run.stop()

    def on_train_end(self, run: TrainRun) -> None:
        if not self.restore_best or self.best_values is None or run.state == "failed":
            return
        if run.best["step"] == run.step:
            run.message += f"; the last step was the best (eval loss {run.best['eval_loss']:.4g})"
            return
        with self.lock, torch.no_grad():
            for p, value in zip(self.params, self.best_values):
                p.copy_(value)
        run.message += (f"; restored the best adapter (step {run.best['step']}, eval loss "
                        f"{run.best['eval_loss']:.4g})")

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {str(i): v for i, v in enumerate(self.best_values or [])}
        return tensors, {"bad": self.bad, "stopped_early": self.stopped_early}

    def restore_checkpoint_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.bad = meta["bad"]
        if self.restore_best and tensors:
            self.best_values = [tensors[str(i)] for i in range(len(tensors))]
