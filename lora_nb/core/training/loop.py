"""The training loop behind ``TrainRun``: steps, callbacks, stop/pause and every way a run can end.

Invariants: only the adapter's parameters change; a run ends at a step boundary
with the adapter at its last good state (a failed or interrupted step is undone from a copy
taken right before the optimizer step); the model's train/eval modes and ``requires_grad``
flags are restored; nothing is displayed here (callbacks are the views).
"""

from __future__ import annotations

import gc
import math
import time
import traceback
from typing import TYPE_CHECKING, Any

import torch

from ...errors import LoraNBError, first_line
from .data.batches import Batches, count, positions, supervised_tokens, to_device
from .data.head_loss import decoder_and_head
from .data.pieces import cpu_overhead, pieces, splittable
from .data.position import DataPosition
from .memory.budget import process_rss_mb
from .optimizer import group_scales, make_optimizer
from .precision import Precision

if TYPE_CHECKING:  # pragma: no cover
    from .run import TrainRun

KEPT = "the adapter keeps what it learned"


class NonFinite(Exception):
    """The loss or gradient norm of a step was NaN or infinite (policy: the run fails)."""


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error from CUDA, MPS or the CPU allocator."""
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class Loop:
    """One run's mechanics; ``Loop(run, ...)()`` trains until done, stopped or failed."""

    def __init__(self, run: TrainRun, session: Any, batches: Batches, eval_batches: Batches | None,
                 params: list[torch.nn.Parameter], precision: Precision) -> None:
        self.run, self.session, self.batches, self.eval_batches = run, session, batches, eval_batches
        self.params, self.settings = params, run.settings
        self.precision = precision
        self.autocast = precision.autocast  # a factory: ``with self.autocast(): ...``
        self.scaler = precision.scaler()  # fp16: scales the loss, skips steps whose gradients overflow
        self.skipped_steps = 0  # steps the scaler skipped (restored from a checkpoint on resume)
        self.model = session.model
        self.phase = "setup"
        self.dirty = False  # True between the pre-step copy and the end of optimizer.step()
        self.iterator = None
        self.batches_seen = 0
        self.supervised = 0  # loss-bearing tokens trained on so far
        self.position = DataPosition(batches.loader)  # epoch and batches drawn, for checkpoints
        self.loss_phase = "loss_fn" if run.custom_loss else "model forward"
        self._rss_at = -1.0
        self.step_positions: int | None = None
        self._rss = 0.0
        self.piece_overhead: int | None = None  # set when the run's batches run in pieces of similar length

    # -- lifecycle -------------------------------------------------------------------------------
    def __call__(self) -> None:
        run = self.run
        state, message = "finished", ""
        try:
            self.setup()
            self.callbacks("on_train_begin", run.begin())  # a callback added later gets it from add_callback
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
            self.callbacks("on_train_end", run.end())
        finally:
            run.mark_ended()

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
        return f"{type(exc).__name__} in {self.phase} at step {step}: {first_line(exc)}"

    # -- steps -----------------------------------------------------------------------------------
    def split_batches(self) -> int | None:
        """The fixed cost of a piece when batches run in pieces of similar length (``pieces.py``), else None: only
        lora_nb's own token batches, on the CPU, for a causal LM whose loss is known to be the mean over the
        loss-bearing positions (``decoder_and_head``; not a model wrapped for several processes)."""
        if (self.settings.split_by_length and self.batches.token_rows and self.run.device.type == "cpu"
                and decoder_and_head(self.model) is not None):
            return cpu_overhead()
        return None

    def train(self) -> None:
        run, every = self.run, self.settings.eval_every
        self.piece_overhead = self.split_batches()
        while run.step < run.max_steps and not run.stop_requested:
            self.wait_if_paused()
            if run.stop_requested:
                break
            record = self.step()
            run.history.append(record)
            self.callbacks("on_step_end", None, record)
            if self.eval_batches is not None and (run.step % every == 0 or run.step == run.max_steps):
                record = self.evaluate()
                run.evals.append(record)
                self.callbacks("on_evaluate", None, record)

    def wait_if_paused(self) -> None:
        self.run.hold_while_paused()

    def step(self) -> dict:
        """One optimizer step (``grad_accum`` micro-batches) and its record."""
        s, run = self.settings, self.run
        t0 = time.perf_counter()
        lr = s.lr * self.lr_factor(run.step)
        for group, scale in zip(self.opt.param_groups, self.lr_scales):
            group["lr"] = lr * scale
        total, samples, tokens, width = None, 0, 0, 0
        for _ in range(s.grad_accum):
            loss, n, t, w = self.micro_step()
            total = loss if total is None else total + loss
            samples, tokens, width = samples + n, tokens + (t or 0), width + (w or 0)
        self.phase = "gradient clipping"
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.params, s.max_grad_norm or math.inf)
        loss_value, norm_value = torch.stack([total.float() / s.grad_accum, norm.float()]).tolist()  # one sync
        if not math.isfinite(loss_value):  # divergence, with or without a scaler
            self.restore_backup()
            raise NonFinite(f"loss became {loss_value} (run failed; the adapter was restored to its weights "
                            "before the last update)")
        skipped = not math.isfinite(norm_value)
        if skipped and self.scaler is None:
            raise NonFinite(f"gradient norm became {norm_value} (run failed; this update was not applied)")
        self.phase = "optimizer step"
        with self.session.lock:
            torch._foreach_copy_(self.backup, self.values)
            self.dirty = True
            self.optimizer_step()
            self.dirty = False
        self.opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        self.step_positions = width or None  # token positions of the step's batches, padding included
        record = {"step": run.step + 1, "loss": loss_value, "lr": lr, "grad_norm": None if skipped else norm_value,
                  "samples_per_s": samples / seconds, "seconds": seconds,
                  "time": time.perf_counter() - self.started, "memory_mb": self.memory_mb()}
        if self.scaler is not None:  # an overflow is the scaler's business: counted, the run goes on
            self.skipped_steps += skipped
            record.update(skipped_steps=self.skipped_steps, loss_scale=self.scaler.get_scale())
        if tokens:
            record["tokens_per_s"] = tokens / seconds
        if tokens and width:
            record["padding"] = 1.0 - tokens / width
        if self.supervised:
            record["supervised_tokens"] = self.supervised  # loss-bearing tokens so far (the capacity gauge)
        if run.device.type == "cuda":
            record["peak_memory_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
        if self.batches.per_epoch:
            record["epoch"] = self.batches_seen / self.batches.per_epoch
        return record

    def micro_step(self) -> tuple[torch.Tensor, int, int | None, int | None]:
        """One batch forward and backward (in pieces of similar length where ``piece_overhead`` is set); its
        loss, samples, real tokens and token positions computed."""
        self.phase = "reading data"
        batch = self.next_batch()
        samples, tokens = count(batch)
        self.supervised += supervised_tokens(batch)
        if self.piece_overhead is not None and splittable(batch):
            parts = pieces(batch, self.piece_overhead)
            tokens = sum(count(part)[1] for part, _ in parts)
        else:
            parts = [(batch, 1.0)]
        widths = [positions(part) for part, _ in parts]
        width = None if None in widths else sum(widths)
        total = None
        for part, weight in parts:
            loss = self.backward(to_device(part, self.run.device), weight)
            total = loss if total is None else total + loss
        return total, samples, tokens, width

    def backward(self, batch: Any, weight: float) -> torch.Tensor:
        """Loss and backward of one (piece of a) batch whose loss counts ``weight`` of its batch's."""
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
        if weight != 1.0:
            loss = loss * weight
        scaled = loss / self.settings.grad_accum
        (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
        return loss.detach().reshape(())

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

    def optimizer_step(self) -> None:
        """AdamW's step; with a scaler, skipped when the gradients overflowed (the scale then halves)."""
        if self.scaler is None:
            self.opt.step()
            return
        self.scaler.step(self.opt)
        self.scaler.update()

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
