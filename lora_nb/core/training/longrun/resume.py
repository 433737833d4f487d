"""Save a run every N steps and continue it later, exactly: the two callbacks and what they capture.

``Checkpointer`` writes a checkpoint (see ``checkpoint_files.py``) every ``save_every`` steps, at the last
step and when the run is stopped (Stop, ``%lora stop``, early stopping); a failing write (full
disk, lost mount) leaves earlier checkpoints intact and the run going, with one ``LoraNBWarning``
per run. ``Resume`` puts a checkpoint back before the first step: adapter weights, AdamW state,
step and history (so the lr schedule continues), an fp16 run's loss scaler (scale, growth tracker,
steps it skipped), the data position (epoch, batches drawn, the
shuffling generator's state when the epoch began) and every RNG state (torch CPU/CUDA, python
``random``, numpy). On CPU a resumed run's per-step losses equal those of the run that was never
interrupted.
"""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ....errors import AdapterFileError, CheckpointError, LoraNBWarning, first_line
from ..callbacks import Callback
from .checkpoint_files import (
    checkpoint_name,
    optimizer_from_files,
    optimizer_to_files,
    prune,
    read_checkpoint,
    write_checkpoint,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..run import TrainRun

# settings that change the sequence of updates: a resume with other values cannot repeat the first run
REPEATABLE = ("batch_size", "grad_accum", "seed", "lr", "schedule", "warmup", "weight_decay", "lr_ratio",
              "max_grad_norm", "precision", "group_by_length")


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG state a step may use: torch CPU and CUDA as tensors, python ``random`` and numpy's as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    return tensors, {"python": [version, list(internal), gauss], "numpy": [name, int(pos), int(has_gauss),
                                                                           float(cached)]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


def settings_json(settings: Any) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool, list)) or v is None else str(v))
            for k, v in asdict(settings).items()}


class Checkpointer(Callback):
    """Writes a checkpoint every ``save_every`` steps, at the last step and when the run is stopped."""

    def __init__(self, loop: Any) -> None:
        s = loop.settings
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
        tensors, state = self.capture(run)
        try:
            folder = write_checkpoint(run.model, run.adapter, self.save_dir / checkpoint_name(run.step), tensors,
                                      state)
            prune(self.save_dir, self.keep)
            self.saved_step = run.step
            return folder
        except (OSError, AdapterFileError) as exc:
            self.failures += 1
            if self.failures == 1:
                warnings.warn(LoraNBWarning(f"could not write the checkpoint at step {run.step} ({first_line(exc)}); "
                                            "training goes on and earlier checkpoints are intact"), stacklevel=2)
            return None

    def capture(self, run: TrainRun) -> tuple[dict[str, torch.Tensor], dict]:
        """The run's whole state: tensors for safetensors, the rest for JSON."""
        loop = self.loop
        opt_tensors, opt_meta = optimizer_to_files(loop.opt)
        rng_tensors, rng_meta = rng_state()
        data_tensors, data_meta = loop.position.to_files()
        state = {"step": run.step, "max_steps": run.max_steps, "adapter": run.adapter,
                 "settings": settings_json(run.settings), "history": run.history, "evals": run.evals,
                 "best": getattr(run, "best", None), "samples": getattr(run, "samples", []),
                 "batches_seen": loop.batches_seen, "optimizer": opt_meta, "rng": rng_meta, "data": data_meta,
                 "scaler": loop.scaler.state_dict() if loop.scaler is not None else None, "callbacks": {}}
        tensors = {**opt_tensors, **rng_tensors, **data_tensors}
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
        self.loop: Any = None  # the run's loop, set when the run is built
        self.session = session
        self.folder, self.state, self.tensors, self.weights = read_checkpoint(path)
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

        loop, state, tensors = self.loop, self.state, self.tensors
        with self.session.lock, torch.no_grad():
            set_peft_model_state_dict(self.session.peft, {PREFIX + k: v for k, v in self.weights.items()},
                                      adapter_name=self.session.active)
            torch._foreach_copy_(loop.backup, loop.values)
        optimizer_from_files(loop.opt, tensors, state["optimizer"])
        run.history[:], run.evals[:] = state["history"], state["evals"]
        run.best, run.samples = state.get("best"), list(state.get("samples") or [])
        loop.batches_seen = state["batches_seen"]
        if loop.scaler is not None and state.get("scaler"):  # fp16: the scale it had learned, not a fresh 65536
            loop.scaler.load_state_dict(state["scaler"])
            loop.skipped_steps = state["history"][-1].get("skipped_steps", 0) if state["history"] else 0
        loop.started = time.perf_counter() - (state["history"][-1]["time"] if state["history"] else 0.0)
        for cb in run.callbacks:
            saved = state["callbacks"].get(type(cb).__name__)
            if saved is not None and hasattr(cb, "restore_checkpoint_state"):
                prefix = f"{type(cb).__name__}."
                cb.restore_checkpoint_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                            saved)
        loop.iterator = loop.position.restore(tensors, state["data"])
        set_rng_state(tensors, state["rng"])  # last: restoring the data position drew from the RNG
