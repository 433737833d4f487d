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
from typing import TYPE_CHECKING, Any

import torch

from ...errors import LoraNBError, first_line
from .data.batches import Batches, count, positions, supervised_tokens, to_device
from .data.head_loss import decoder_and_head
from .data.pieces import cpu_overhead, pieces, splittable
from .data.position import DataPosition
from .lifecycle import KEPT, Events, Lifecycle, is_oom
from .longrun.checkpoint_files import optimizer_from_files, optimizer_to_files
from .memory.budget import MemoryGauge
from .optimizer import group_scales, lr_factor, make_optimizer
from .precision import Precision
from .rng import rng_state, set_rng_state
from .undo import forget_undone

if TYPE_CHECKING:  # pragma: no cover
    from ..types import RunState, SessionLike
    from .run import TrainRun


class NonFinite(Exception):
    """The loss or gradient norm of a step was NaN or infinite (policy: the run fails)."""


class Loop:
    """One run's mechanics, the ``RunSource`` of its ``Lifecycle``: ``Loop(run, ...)()`` trains until done, stopped
    or failed; ``state_dict`` / ``load_state_dict`` carry everything a resumed run needs of it."""

    def __init__(self, run: TrainRun, session: SessionLike, batches: Batches, eval_batches: Batches | None,
                 params: list[torch.nn.Parameter], precision: Precision) -> None:
        self.run, self.session, self.batches, self.eval_batches = run, session, batches, eval_batches
        self.params, self.settings = params, run.settings
        self.precision, self.autocast = precision, precision.autocast  # autocast: ``with self.autocast(): ...``
        self.scaler = precision.scaler()  # fp16: scales the loss, skips steps whose gradients overflow
        self.skipped_steps = 0  # steps the scaler skipped (restored from a checkpoint on resume)
        self.model: torch.nn.Module = session.model
        self.phase = "setup"
        self.dirty = False  # True between the pre-step copy and the end of optimizer.step()
        self.iterator: Any = None  # the data loader's iterator of the current epoch
        self.opt: Any = None  # AdamW while the run trains (``setup`` to ``cleanup``)
        self.modes: dict[torch.nn.Module, bool] = {}  # the model's train/eval modes and flags before the run
        self.flags: dict[torch.nn.Parameter, bool] = {}
        self.started = time.perf_counter()  # the run's clock (moved back on resume: ``load_state_dict``)
        self.batches_seen, self.supervised = 0, 0  # batches drawn and loss-bearing tokens trained on so far
        self.position = DataPosition(batches.loader)  # epoch and batches drawn, for checkpoints
        self.loss_phase = "loss_fn" if run.custom_loss else "model forward"
        self.memory = MemoryGauge()
        self.step_positions: int | None = None
        self.piece_overhead: int | None = None  # set when the run's batches run in pieces of similar length

    # -- lifecycle (lifecycle.py drives it: setup, events, outcome or describe, cleanup) ----------------------------
    def __call__(self) -> None:
        Lifecycle(self.run, self)()

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

    def outcome(self) -> tuple[RunState, str]:
        run = self.run
        if run.step < run.max_steps:
            return "stopped", run.stop_reason or f"stopped at step {run.step}/{run.max_steps}; {KEPT}"
        return "finished", ""

    def cleanup(self, failed: bool) -> None:
        """Undo a half-done step, drop gradients and optimizer state, restore modes and flags (``failed``: and
        release the memory the failure left)."""
        if self.dirty:
            self.restore_backup()
            self.dirty = False
        for p in self.params:
            p.grad = None
        self.opt = None
        for p, flag in self.flags.items():
            p.requires_grad_(flag)
        for m, mode in self.modes.items():
            m.training = mode
        self.iterator = None
        if failed:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def describe(self, exc: BaseException, hook: str | None = None) -> str:
        """One line saying how the run failed and what to do (``hook``: the callback that raised it)."""
        s, phase = self.settings, hook or self.phase
        step = getattr(exc, "step", None) or self.run.step + (0 if phase.startswith(("callback", "evaluation")) else 1)
        if isinstance(exc, NonFinite):
            return f"{exc} at step {step}; lower the learning rate (lr={s.lr:g}) or check the data for NaN/inf"
        if is_oom(exc):
            smaller = max(1, s.batch_size // 2)
            return (f"out of memory at step {step} with batch_size={s.batch_size}: the step was undone and memory "
                    f"released; try batch_size={smaller} with grad_accum={s.grad_accum * 2} (same effective batch)")
        if isinstance(exc, LoraNBError):
            return str(exc)
        return f"{type(exc).__name__} in {phase} at step {step}: {first_line(exc)}"

    # -- steps -----------------------------------------------------------------------------------
    def split_batches(self) -> int | None:
        """The fixed cost of a piece when batches run in pieces of similar length (``pieces.py``), else None: only
        lora_nb's own token batches, on the CPU, for a causal LM whose loss is known to be the mean over the
        loss-bearing positions (``decoder_and_head``; not a model wrapped for several processes)."""
        if (self.settings.split_by_length and self.batches.token_rows and self.run.device.type == "cpu"
                and decoder_and_head(self.model) is not None):
            return cpu_overhead()
        return None

    def events(self) -> Events:
        """Steps (and evaluations every ``eval_every`` steps) until the last step or a stop; held while paused."""
        run, every = self.run, self.settings.eval_every or 1
        self.piece_overhead = self.split_batches()
        while run.step < run.max_steps and not run.stop_requested:
            run.hold_while_paused()
            if run.stop_requested:
                break
            yield "step", self.step()  # the lifecycle records it in run.history and calls on_step_end
            if self.eval_batches is not None and (run.step % every == 0 or run.step == run.max_steps):
                yield "eval", self.evaluate()

    def step(self) -> dict:
        """One optimizer step (``grad_accum`` micro-batches) and its record."""
        s, run = self.settings, self.run
        t0 = time.perf_counter()
        self.phase = "learning rate"
        lr = s.lr * lr_factor(s, run.step, run.max_steps)
        for group, scale in zip(self.opt.param_groups, self.lr_scales):
            group["lr"] = lr * scale
        total: torch.Tensor | None = None
        samples, tokens, width = 0, 0, 0
        for _ in range(s.grad_accum):
            loss, n, t, w = self.micro_step()
            total = loss if total is None else total + loss
            samples, tokens, width = samples + n, tokens + (t or 0), width + (w or 0)
        assert total is not None, "grad_accum ≥ 1"
        self.phase = "gradient clipping"
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        norm = torch.nn.utils.clip_grad_norm_(self.params, s.max_grad_norm or math.inf)
        loss_value, norm_value = torch.stack([total.float() / s.grad_accum, norm.float()]).tolist()  # one sync
        if not math.isfinite(loss_value):  # divergence, with or without a scaler
            diverged = NonFinite(f"loss became {loss_value} (run failed; the adapter was restored to its weights "
                                 "before the last update)")
            diverged.step = run.step + 1  # type: ignore[attr-defined]  # counted before the undone step goes
            self.restore_backup()
            forget_undone(run, getattr(self, "backup_step", run.step))  # the history matches the weights restored
            raise diverged
        skipped = not math.isfinite(norm_value)
        if skipped and self.scaler is None:
            raise NonFinite(f"gradient norm became {norm_value} (run failed; this update was not applied)")
        self.phase = "optimizer step"
        with self.session.lock:
            torch._foreach_copy_(self.backup, self.values)
            self.backup_step = run.step  # the copy holds the weights after this many steps
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
            tokens = sum(count(part)[1] or 0 for part, _ in parts)
        else:
            parts = [(batch, 1.0)]
        widths = [w for w in (positions(part) for part, _ in parts) if w is not None]
        width = sum(widths) if len(widths) == len(parts) else None
        losses = [self.backward(to_device(part, self.run.device), weight) for part, weight in parts]
        total = losses[0]
        for loss in losses[1:]:
            total = total + loss
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

    def evaluate(self) -> dict:
        self.phase = "evaluation"
        total, seen, batches = 0.0, 0, self.eval_batches
        assert batches is not None, "evaluations come only with eval batches"
        self.model.eval()
        try:
            with torch.no_grad(), self.autocast():
                for batch in batches.loader:
                    n, _ = count(batch)
                    loss = batches.loss(self.model, to_device(batch, self.run.device))
                    total, seen = total + float(loss) * n, seen + n
        finally:
            self.model.train()
        return {"step": self.run.step, "eval_loss": total / max(seen, 1), "time": time.perf_counter() - self.started}

    def memory_mb(self) -> float:
        """CUDA memory allocated on the run's device, else the process RSS (sampled at most every 0.5 s)."""
        return self.memory(self.run.device)

    # -- what a resumed run needs ----------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything a resumed run needs of this loop, as tensors (for safetensors) and JSON: AdamW's state, an
        fp16 run's scaler and the steps it skipped, the supervised tokens and batches seen, the data position,
        the run's clock and every RNG state."""
        opt_tensors, opt_meta = optimizer_to_files(self.opt)
        data_tensors, data_meta = self.position.to_files()
        rng_tensors, rng_meta = rng_state()
        meta = {"optimizer": opt_meta, "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "skipped_steps": self.skipped_steps, "supervised_tokens": self.supervised,
                "batches_seen": self.batches_seen, "data": data_meta, "seconds": time.perf_counter() - self.started,
                "rng": rng_meta}
        return {**opt_tensors, **data_tensors, **rng_tensors}, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Put back what ``state_dict`` gave, before the first step and after the adapter's weights were put back
        (the copy a failed step is undone from follows them). Without ``optimizer``, ``scaler`` or ``rng`` in
        ``meta`` those start fresh (a run resumed from its weights only)."""
        with self.session.lock, torch.no_grad():
            torch._foreach_copy_(self.backup, self.values)
        if "optimizer" in meta:  # absent: a fresh optimizer (so too for the scaler and the RNG states)
            optimizer_from_files(self.opt, tensors, meta["optimizer"])
        if self.scaler is not None and meta.get("scaler"):  # fp16: the scale it had learned, not a fresh 65536
            self.scaler.load_state_dict(meta["scaler"])
            self.skipped_steps = meta["skipped_steps"]
        self.supervised, self.batches_seen = meta["supervised_tokens"], meta["batches_seen"]
        self.started = time.perf_counter() - meta["seconds"]
        self.iterator = self.position.restore(tensors, meta["data"])
        if "rng" in meta:  # last: restoring the data position drew from the RNG
            set_rng_state(tensors, meta["rng"])
