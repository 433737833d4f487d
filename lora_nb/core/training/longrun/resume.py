"""Save a run every N steps and continue it later, exactly: the two callbacks and what they capture.

``Checkpointer`` writes a checkpoint (see ``checkpoint_files.py``) every ``save_every`` steps, at the last
step and when the run is stopped (Stop, ``%lora stop``, early stopping); a failing write (full
disk, lost mount) leaves earlier checkpoints intact and the run going, with one ``LoraNBWarning``
per run; each later checkpoint is still tried. ``Resume`` puts a checkpoint back before the first step:
adapter weights, AdamW state,
step and history (so the lr schedule continues), an fp16 run's loss scaler (scale, growth tracker,
steps it skipped), the data position (epoch, batches drawn, the
shuffling generator's state when the epoch began) and every RNG state (torch CPU/CUDA, python
``random``, numpy). On CPU a resumed run's per-step losses equal those of the run that was never
interrupted.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ....errors import AdapterFileError, CheckpointError, FileWriteError, LoraNBWarning, first_line
from ...files import MANIFEST
from ..callbacks import Callback
from .checkpoint_files import (
    checkpoint_name,
    missing_state,
    prune,
    read_checkpoint,
    write_checkpoint,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..loop import Loop
    from ..run import TrainRun

# settings that change the sequence of updates: a resume with other values cannot repeat the first run
REPEATABLE = ("batch_size", "grad_accum", "seed", "lr", "schedule", "warmup", "weight_decay", "lr_ratio",
              "max_grad_norm", "precision", "group_by_length")


def settings_json(settings: Any) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool, list)) or v is None else str(v))
            for k, v in asdict(settings).items()}


class Checkpointer(Callback):
    """Writes a checkpoint every ``save_every`` steps, at the last step and when the run is stopped."""

    def __init__(self, loop: Loop) -> None:
        s = loop.settings
        assert s.save_dir is not None, "TrainSettings checks save_every and save_dir come together"
        self.loop, self.every, self.keep = loop, s.save_every, s.keep
        self.save_dir = Path(s.save_dir).expanduser().absolute()
        self.failures = 0
        self.saved_step = -1

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        step = record["step"]
        if step % self.every == 0 or step == run.max_steps or run.stop_requested:
            self.save(run)

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        if run.stop_requested and self.saved_step != run.step:  # stopped by an evaluation (early stopping)
            self.save(run)

    def save(self, run: TrainRun) -> Path | None:
        """Write this step's checkpoint; one that fails (full disk, lost mount) is skipped, earlier ones stay intact
        and the next one is tried (the error never reaches the run, which would detach this callback)."""
        tensors, state = self.capture(run)
        try:
            folder = write_checkpoint(run.model, run.adapter, self.save_dir / checkpoint_name(run.step), tensors,
                                      state)
            self.saved_step = run.step
            prune(self.save_dir, self.keep, (getattr(run, "best", None) or {}).get("step"))
            return folder
        except (FileWriteError, OSError, AdapterFileError) as exc:
            self.failures += 1
            if self.failures == 1:  # said once per run: a full disk would otherwise repeat it every checkpoint
                warnings.warn(LoraNBWarning(f"could not write the checkpoint at step {run.step} ({first_line(exc)}); "
                                            "training goes on, earlier checkpoints are intact and each later one is "
                                            "still tried"), stacklevel=2)
            return None

    def capture(self, run: TrainRun) -> tuple[dict[str, torch.Tensor], dict]:
        """The run's whole state: tensors for safetensors, the rest for JSON (the loop's own: ``Loop.state_dict``)."""
        tensors, loop_state = self.loop.state_dict()
        state = {"step": run.step, "max_steps": run.max_steps, "adapter": run.adapter,
                 "settings": settings_json(run.settings), "history": run.history, "evals": run.evals,
                 "best": run.best, "samples": run.samples, **loop_state, "callbacks": {}}
        for cb in run.callbacks:
            if hasattr(cb, "checkpoint_state"):
                cb_tensors, cb_meta = cb.checkpoint_state()
                key = type(cb).__name__
                state["callbacks"][key] = cb_meta
                tensors.update({f"{key}.{k}": v for k, v in cb_tensors.items()})
        return tensors, state


class Resume(Callback):
    """Puts a checkpoint back into a run before its first step (read and checked when the run is prepared)."""

    def __init__(self, session: Any, path: str, max_steps: int, settings: Any) -> None:
        self.loop: Loop | None = None  # the run's loop, set when the run is built
        self.session = session
        self.folder, self.state, self.tensors, self.weights, skipped = read_checkpoint(path)
        if skipped:
            warnings.warn(LoraNBWarning(f"resuming from {self.folder.name}, the newest checkpoint whose files match "
                                        f"its manifest; skipped: {'; '.join(skipped)}"), stacklevel=2)
        if not (self.folder / MANIFEST).is_file():
            warnings.warn(LoraNBWarning(f"{self.folder} has no {MANIFEST} (written by an older lora_nb): its files "
                                        "are resumed unchecked"), stacklevel=2)
        self.weights_only = self._check_complete(settings)
        step = self.state["step"]
        if step >= max_steps:
            raise CheckpointError(f"{self.folder} is at step {step} of {max_steps}: nothing left to train; "
                                  "give more `steps=…`")
        self._check_weights()
        if (self.state["settings"].get("lr_ratio") is None) != (settings.lr_ratio is None):
            raise CheckpointError(f"{self.folder} was trained {'without' if settings.lr_ratio else 'with'} LoRA+ "
                                  "(lr_ratio); resume it the same way")
        saved = self.state["settings"]
        changed = [f"{k} {saved.get(k)} → {v}" for k, v in settings_json(settings).items()
                   if k in REPEATABLE and saved.get(k) != v]
        if changed or self.state["max_steps"] != max_steps:
            changed += [f"steps {self.state['max_steps']} → {max_steps}"] * (self.state["max_steps"] != max_steps)
            warnings.warn(LoraNBWarning(f"resuming with settings that differ from the checkpoint's "
                                        f"({', '.join(changed)}): the run will not repeat the interrupted one"),
                          stacklevel=2)

    def _check_complete(self, settings: Any) -> bool:
        """True when only the weights (and step, history, data position) will be restored: asked for with
        ``resume_weights_only``; else a checkpoint lacking optimizer, scaler or RNG state is refused."""
        missing = missing_state(self.state, self.tensors)
        if getattr(settings, "resume_weights_only", False):
            warnings.warn(LoraNBWarning(f"resuming {self.folder.name} from its weights only: a fresh optimizer, loss "
                                        "scaler and RNG, so the losses will differ from the interrupted run's"),
                          stacklevel=3)
            return True
        if missing:
            raise CheckpointError(f"{self.folder} lacks {', '.join(missing)}: the run cannot continue exactly; "
                                  "pass `resume_weights_only=True` (--resume-weights-only) to resume its weights only")
        return False

    def _check_weights(self) -> None:
        from peft import get_peft_model_state_dict

        from ...adapters.io import PREFIX
        from ...adapters.keys import mismatch

        own = get_peft_model_state_dict(self.session.peft, adapter_name=self.session.active)
        problem = mismatch(self.weights, {k.removeprefix(PREFIX): tuple(v.shape) for k, v in own.items()})
        if problem:
            raise CheckpointError(f"{self.folder} does not fit adapter `{self.session.active}`: {problem}")

    def on_train_begin(self, run: TrainRun) -> None:
        from peft import set_peft_model_state_dict

        from ...adapters.io import PREFIX

        state, tensors = self.state, self.tensors
        assert self.loop is not None, "Resume.loop is set when the run is built"
        with self.session.lock, torch.no_grad():
            set_peft_model_state_dict(self.session.peft, {PREFIX + k: v for k, v in self.weights.items()},
                                      adapter_name=self.session.active)
        run.history[:], run.evals[:] = state["history"], state["evals"]
        run.best, run.samples = state.get("best"), list(state.get("samples") or [])
        for cb in run.callbacks:
            saved = state["callbacks"].get(type(cb).__name__)
            if saved is not None and hasattr(cb, "restore_checkpoint_state"):
                prefix = f"{type(cb).__name__}."
                cb.restore_checkpoint_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                            saved)
        self.loop.load_state_dict(tensors, self.loop_state())  # last: it restores the RNG states

    def loop_state(self) -> dict[str, Any]:
        """The loop's part of the checkpoint's state: from its weights only, without the optimizer, the loss
        scaler and the RNG states (they start fresh); a checkpoint written before the loop kept its own counters
        and clock gets them from its history."""
        last = self.state["history"][-1] if self.state["history"] else {}
        state = {"skipped_steps": last.get("skipped_steps", 0), "supervised_tokens": last.get("supervised_tokens", 0),
                 "seconds": last.get("time", 0.0), **self.state}
        for key in ("optimizer", "scaler", "rng") if self.weights_only else ():
            state.pop(key, None)
        return state
