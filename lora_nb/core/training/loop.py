"""The training loop behind ``TrainRun``: steps, callbacks, stop/pause and every way a run can end.

Invariants: only the adapter's parameters change; a run ends at a step boundary
with the adapter at its last good state (a failed or interrupted step is undone from a copy
taken right before the optimizer step); the model's train/eval modes and ``requires_grad``
flags are restored; nothing is displayed here (callbacks are the views).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import time
import traceback
from typing import Any

import torch

from ...errors import LoraNBError
from .data.batches import Batches, count, to_device
from .data.position import DataPosition
from .optimizer import group_scales, make_optimizer

KEPT = "the adapter keeps what it learned"


class NonFinite(Exception):
    """The loss or gradient norm of a step was NaN or infinite (policy: the run fails)."""


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error from CUDA, MPS or the CPU allocator."""
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class Loop:
    """One run's mechanics; ``Loop(run, ...)()`` trains until done, stopped or failed."""

    def __init__(self, run: Any, session: Any, batches: Batches, eval_batches: Batches | None,
                 params: list[torch.nn.Parameter], bf16: bool) -> None:
        self.run, self.session, self.batches, self.eval_batches = run, session, batches, eval_batches
        self.params, self.settings = params, run.settings
        self.autocast = (functools.partial(torch.autocast, run.device.type, dtype=torch.bfloat16) if bf16
                         else contextlib.nullcontext)
        self.model = session.model
        self.phase = "setup"
        self.dirty = False  # True between the pre-step copy and the end of optimizer.step()
        self.iterator = None
        self.batches_seen = 0
        self.position = DataPosition(batches.loader)  # epoch and batches drawn, for checkpoints
        self.loss_phase = "loss_fn" if run.custom_loss else "model forward"
        self._rss_at = -1.0
        self._rss = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def __call__(self) -> None:
        run = self.run
        state, message = "finished", ""
        try:
            self.setup()
            with run._lock:  # from here on, a callback added late gets on_train_begin from add_callback
                run._begun = True
                first = tuple(run.callbacks)
            self.callbacks("on_train_begin", first)
            self.train()
            if run.step < run.max_steps:
                state, message = "stopped", (getattr(run, "stop_reason", "")
                                             or f"stopped at step {run.step}/{run.max_steps}; {KEPT}")
        except KeyboardInterrupt:
            state, message = "stopped", f"interrupted at step {run.step}/{run.max_steps}; {KEPT}"
        except BaseException as exc:  # every failure ends the run; the kernel lives on
            state, message = "failed", self.describe(exc)
            run.error, run.traceback = exc, traceback.format_exc()
            if is_oom(exc):
                traceback.clear_frames(exc.__traceback__)  # frames hold the step's activations
        finally:
            self.cleanup(release=state == "failed")
        run.finish(state, message)
        try:
            with run._lock:
                run._ended = True
                last = tuple(run.callbacks)
            self.callbacks("on_train_end", last)
        finally:
            run._done.set()

    def setup(self) -> None:
        model, ids = self.model, {id(p) for p in self.params}
        self.modes = {m: m.training for m in model.modules()}
        self.flags = {p: p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in ids)
        model.train()
        s = self.settings
        self.opt = make_optimizer(model, self.params, s)
        self.lr_scales = group_scales(self.opt, s.lr)  # LoRA+: B's groups keep their ratio to A's
        self.values = [p.detach() for p in self.params]  # views that follow every in-place update
        self.backup = [v.clone() for v in self.values]
        self.started = time.perf_counter()

    def cleanup(self, release: bool) -> None:
        """Undo a half-done step, drop gradients and optimizer state, restore modes and flags."""
        if self.dirty:
            self.restore_backup()
            self.dirty = False
        for p in self.params:
            p.grad = None
        self.opt = None
        for p, flag in getattr(self, "flags", {}).items():
            p.requires_grad_(flag)
        for m, mode in getattr(self, "modes", {}).items():
            m.training = mode
        self.iterator = None
        if release:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def describe(self, exc: BaseException) -> str:
        """One line saying how the run failed and what to do."""
        s = self.settings
        step = self.run.step + (0 if self.phase.startswith(("callback", "evaluation")) else 1)
        if isinstance(exc, NonFinite):
            return f"{exc} at step {step}; lower the learning rate (lr={s.lr:g}) or check the data for NaN/inf"
        if is_oom(exc):
            smaller = max(1, s.batch_size // 2)
            return (f"out of memory at step {step} with batch_size={s.batch_size}: the step was undone and memory "
                    f"released; try batch_size={smaller} with grad_accum={s.grad_accum * 2} (same effective batch)")
        if isinstance(exc, LoraNBError):
            return str(exc)
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__} in {self.phase} at step {step}: {first}"

    # -- steps -----------------------------------------------------------------------------------
    def train(self) -> None:
        run, every = self.run, self.settings.eval_every
        while run.step < run.max_steps and not run._stop.is_set():
            self.wait_if_paused()
            if run._stop.is_set():
                break
            record = self.step()
            run.history.append(record)
            self.callbacks("on_step_end", None, record)
            if self.eval_batches is not None and (run.step % every == 0 or run.step == run.max_steps):
                record = self.evaluate()
                run.evals.append(record)
                self.callbacks("on_evaluate", None, record)

    def wait_if_paused(self) -> None:
        if self.run._resume.is_set():
            return
        self.run._holding.set()  # the step before is done: run.wait_paused() returns
        try:
            while not self.run._resume.wait(0.1):
                if self.run._stop.is_set():
                    return
        finally:
            self.run._holding.clear()

    def step(self) -> dict:
        """One optimizer step (``grad_accum`` micro-batches) and its record."""
        s, run = self.settings, self.run
        t0 = time.perf_counter()
        lr = s.lr * self.lr_factor(run.step)
        for group, scale in zip(self.opt.param_groups, self.lr_scales):
            group["lr"] = lr * scale
        total, samples, tokens = None, 0, 0
        for _ in range(s.grad_accum):
            loss, n, t = self.micro_step()
            total = loss if total is None else total + loss
            samples, tokens = samples + n, tokens + (t or 0)
        self.phase = "gradient clipping"
        norm = torch.nn.utils.clip_grad_norm_(self.params, s.max_grad_norm or math.inf)
        loss_value, norm_value = torch.stack([total.float() / s.grad_accum, norm.float()]).tolist()  # one sync
        if not math.isfinite(loss_value):
            self.restore_backup()
            raise NonFinite(f"loss became {loss_value} (run failed; the adapter was restored to its weights "
                            "before the last update)")
        if not math.isfinite(norm_value):
            raise NonFinite(f"gradient norm became {norm_value} (run failed; this update was not applied)")
        self.phase = "optimizer step"
        with self.session.lock:
            torch._foreach_copy_(self.backup, self.values)
            self.dirty = True
            self.opt.step()
            self.dirty = False
        self.opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        record = {"step": run.step + 1, "loss": loss_value, "lr": lr, "grad_norm": norm_value,
                  "samples_per_s": samples / seconds, "seconds": seconds,
                  "time": time.perf_counter() - self.started, "memory_mb": self.memory_mb()}
        if tokens:
            record["tokens_per_s"] = tokens / seconds
        if run.device.type == "cuda":
            record["peak_memory_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
        if self.batches.per_epoch:
            record["epoch"] = self.batches_seen / self.batches.per_epoch
        return record

    def micro_step(self) -> tuple[torch.Tensor, int, int | None]:
        self.phase = "reading data"
        batch = self.next_batch()
        samples, tokens = count(batch)
        batch = to_device(batch, self.run.device)
        self.phase = self.loss_phase
        with self.autocast():
            loss = self.batches.loss(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise LoraNBError(f"the loss must be a scalar tensor; got {type(loss).__name__}"
                              + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        if not loss.requires_grad:
            raise LoraNBError("the loss does not depend on the adapter (no gradient): is the adapter on and "
                              "used by the model's forward?")
        self.phase = "backward"
        (loss / self.settings.grad_accum).backward()
        return loss.detach().reshape(()), samples, tokens

    def next_batch(self) -> Any:
        if self.iterator is None:
            self.iterator = self.position.new_iterator()
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.iterator = self.position.new_iterator()  # next epoch
            try:
                batch = next(self.iterator)
            except StopIteration:
                raise LoraNBError("the training data yielded no batches") from None
        self.batches_seen += 1
        self.position.consumed += 1
        return batch

    def restore_backup(self) -> None:
        with self.session.lock, torch.no_grad():
            torch._foreach_copy_(self.values, self.backup)

    def lr_factor(self, step: int) -> float:
        """Warmup then cosine / linear decay (or constant) at optimizer step ``step`` (0-based)."""
        s, total = self.settings, self.run.max_steps
        warm = s.warmup_steps(total)
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        if s.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress if s.schedule == "linear" else 1.0

    def evaluate(self) -> dict:
        self.phase = "evaluation"
        total, seen = 0.0, 0
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                for batch in self.eval_batches.loader:
                    n, _ = count(batch)
                    loss = self.eval_batches.loss(self.model, to_device(batch, self.run.device))
                    total, seen = total + float(loss) * n, seen + n
        finally:
            self.model.train()
        return {"step": self.run.step, "eval_loss": total / max(seen, 1), "time": time.perf_counter() - self.started}

    def memory_mb(self) -> float:
        """CUDA memory allocated on the run's device, else the process RSS (sampled at most every 0.5 s)."""
        device = self.run.device
        if device.type == "cuda":
            return torch.cuda.memory_allocated(device) / 2**20
        now = time.perf_counter()
        if now - self._rss_at >= 0.5:
            self._rss_at, self._rss = now, process_rss_mb()
        return self._rss

    def callbacks(self, hook: str, which: tuple | None, *args: Any) -> None:
        """Call ``hook`` on ``which`` callbacks (default: the run's current ones); a failing view is detached."""
        for cb in which if which is not None else tuple(self.run.callbacks):
            self.phase = f"callback {type(cb).__name__}.{hook}"
            self.run.call_hook(cb, hook, *args)


def process_rss_mb() -> float:
    """Resident memory of this process in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource  # Unix only; /proc covers Linux

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024


def uses_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast on CUDA GPUs that support it (precision "auto"), or wherever it is asked for."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
