"""``WatchCallback``: a ``transformers.TrainerCallback`` that turns a trainer's run into a lora_nb ``TrainRun``.

Every lora_nb callback (the live dashboard, the spectra recorder, the console reporter) then watches a ``Trainer``,
``SFTTrainer``, ``DPOTrainer`` or ``GRPOTrainer`` run as it watches lora_nb's own: ``on_train_begin``, one
``on_step_end`` per training log (the trainer's own numbers, see ``logs``), ``on_evaluate`` per evaluation and
``on_train_end``, pushed into the run's ``Lifecycle`` (a failing view is detached; the trainer goes on).

Stop and Pause act at a step boundary through the trainer's ``control``: ``run.stop()`` (the view's Stop, ``%lora
stop``) sets ``should_training_stop`` (and ``should_save`` when the trainer saves checkpoints), ``run.pause()`` holds
the trainer's thread after the step until ``run.resume()``. In the main thread the first Ctrl-C (the notebook's
interrupt button) does the same as Stop; a second one interrupts at once.
"""

from __future__ import annotations

import signal
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import TrainerCallback

from ...errors import LoraNBWarning, OptionError
from ..training.lifecycle import Lifecycle
from ..training.longrun.spectra_history import SpectraRecorder
from ..training.memory.budget import MemoryGauge
from ..training.run import TrainRun
from ..training.settings import TrainSettings
from ..types import RunState
from .adapter import Target, discover
from .logs import FAMILY_NAMES, Rates, family, record_of


@dataclass(eq=False)
class WatchedRun(TrainRun):
    """A ``TrainRun`` whose steps a trainer makes: ``step`` is the trainer's ``global_step``, not the record count."""

    global_step: int = 0
    family: str = "trainer"
    note: str = ""  # how Stop works for this run (foreground or background), said in the dashboard
    target_note: str = ""  # which adapter is watched (or why none is)
    data_notes: list[str] = field(default_factory=list)  # the first batch's failed loss-mask checks, one line each

    @property
    def step(self) -> int:  # type: ignore[override]
        return self.global_step


def settings_of(args: Any, max_steps: int) -> TrainSettings:
    """lora_nb's settings that describe the trainer's arguments (what the dashboard's first line says)."""
    warmup = float(getattr(args, "warmup_steps", 0) or getattr(args, "warmup_ratio", 0) or 0)
    try:
        settings = TrainSettings(steps=max(1, max_steps), lr=float(args.learning_rate),
                                 batch_size=int(args.per_device_train_batch_size),
                                 grad_accum=int(args.gradient_accumulation_steps), seed=args.seed, warmup=warmup,
                                 weight_decay=float(args.weight_decay), device="auto", spectra_every=None)
    except OptionError:  # an argument lora_nb's own loop would refuse: the first line shows less
        settings = TrainSettings(steps=max(1, max_steps))
    schedule = getattr(args, "lr_scheduler_type", "linear")
    settings.schedule = str(getattr(schedule, "value", schedule))  # the trainer's own, whatever its name
    return settings


def watched_line(target: Target) -> str:
    """``watching adapter `default` (12.3k trainable parameters)`` or why there is none."""
    if target.session is None:
        return target.note
    line = f"watching adapter `{target.adapter}` ({target.trainable:,} trainable parameters)"
    return f"{line}; {target.note}" if target.note else line


class WatchCallback(TrainerCallback):
    """Watches a trainer's runs with lora_nb callbacks (``views``); ``run`` is the latest run, ``history`` its
    records. ``background``: the trainer trains in a thread (``fit``), so Stop/Pause buttons can be pressed."""

    def __init__(self, views: list | None = None, spectra: bool = True, background: bool = False) -> None:
        self.views = list(views or [])
        self.spectra, self.background = spectra, background
        self.trainer: Any = None  # set by ``watch``: its data, collator and family
        self.run: WatchedRun | None = None
        self.target: Target | None = None
        self.counter: Any = None  # ``supervised.TokenCounter`` on the trainer's collator (``watch`` sets it)
        self._lifecycle: Lifecycle | None = None
        self._rates = Rates()
        self._memory = MemoryGauge()
        self._sigint: Any = None
        self.result: Any = None  # what ``trainer.train`` returned in the background (``fit``)
        self.error: BaseException | None = None  # what it raised there

    @property
    def history(self) -> list[dict]:
        return self.run.history if self.run is not None else []

    # -- the trainer's hooks ------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.run is not None and not self.run.done:  # the last run never reached on_train_end (it raised)
            self.fail(RuntimeError("the trainer's previous run ended with an exception"))
        target = self.target = discover(model if model is not None else self.trainer.model)
        if target.session is not None:  # refused (one line) while lora_nb trains this model: nothing started
            target.session.ensure_idle("train it with a trainer as well")
        run = self.run = self._make_run(args, state, target)
        self._rates = Rates(step=state.global_step)
        if target.session is not None:
            with target.session.lock:
                target.session.run = run
            target.session.notify("train")
        self._lifecycle = Lifecycle(run)  # no source: the trainer pushes the events
        self._catch_interrupt()
        self._lifecycle.begin()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        counter = self.counter
        if counter is not None and counter.warnings:  # the first batch's loss-mask checks, said before step 1
            said, counter.warnings = counter.warnings, []
            if self.run is not None:
                self.run.data_notes += said
            for line in said:
                warnings.warn(line, LoraNBWarning, stacklevel=2)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        run = self.run
        if run is None or run.done or not logs or "loss" not in logs:
            return
        run.global_step = state.global_step
        tokens = self.counter.supervised if self.counter is not None else 0
        record = record_of(logs, state.global_step, run.seconds, self._rates, self._samples_per_step(args),
                           self._memory(run.device), tokens)
        self._record("step", record)  # one small dict per log, as lora_nb's own runs keep; the views decimate

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        run = self.run
        if run is None or run.done:
            return
        run.global_step = state.global_step
        if run.state == "paused":
            run.hold_while_paused()
        if run.stop_requested:
            control.should_training_stop = True
            control.should_save = str(getattr(args.save_strategy, "value", args.save_strategy)) != "no"

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
        run = self.run
        if run is None or run.done or not metrics or "eval_loss" not in metrics:
            return
        record = {"step": state.global_step, "eval_loss": float(metrics["eval_loss"]), "time": run.seconds}
        if run.best is None or record["eval_loss"] < run.best["eval_loss"]:
            run.best = {"step": record["step"], "eval_loss": record["eval_loss"]}
        self._record("eval", record)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        run = self.run
        if run is None or run.done:
            return
        run.global_step = state.global_step
        if run.stop_requested:
            self.end("stopped", f"stopped at step {run.step}/{run.max_steps}; the adapter keeps what it learned, "
                                "the trainer's state is intact")
        else:
            self.end("finished", "")

    # -- endings ------------------------------------------------------------------------------------
    def fail(self, exc: BaseException, traceback_text: str | None = None) -> None:
        """End the run in progress as the trainer's exception ended it (Ctrl-C: stopped)."""
        run = self.run
        if run is None or run.done:
            return
        if isinstance(exc, KeyboardInterrupt):
            self.end("stopped", f"interrupted at step {run.step}/{run.max_steps}; the adapter keeps what it learned")
            return
        run.error, run.traceback = exc, traceback_text
        self.end("failed", f"the trainer raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def end(self, state: RunState, message: str) -> None:
        self._release_interrupt()
        if self._lifecycle is not None and self.run is not None:
            self._lifecycle.end(state, message)

    # -- helpers ------------------------------------------------------------------------------------
    def _record(self, kind: Literal["step", "eval"], record: dict) -> None:
        if self._lifecycle is not None:
            self._lifecycle.record(kind, record)

    def _make_run(self, args: Any, state: Any, target: Target) -> WatchedRun:
        trainer, fam = self.trainer, family(self.trainer) if self.trainer is not None else "trainer"
        device = getattr(args, "device", torch.device("cpu"))
        recorder = [SpectraRecorder(None)] if self.spectra and target.session is not None else []
        data = type(getattr(trainer, "train_dataset", None)).__name__ if trainer is not None else "the trainer's data"
        return WatchedRun(target.module, target.adapter, settings_of(args, state.max_steps), max(1, state.max_steps),
                          device, f"{device}, {FAMILY_NAMES[fam]} ({type(trainer).__name__})", data,
                          background=self.background, callbacks=[*recorder, *self.views],
                          trainable=target.trainable, global_step=state.global_step, family=fam,
                          note=self._stop_note(), target_note=watched_line(target))

    def _stop_note(self) -> str:
        if self.background:
            return "training in a background thread: Stop and Pause act at the next step boundary"
        return ("training in this cell: the buttons cannot be pressed while it runs; the interrupt button (■) stops "
                "it at the next step boundary (trainer state intact). `lora_nb.fit(trainer)` trains in the "
                "background with Stop and Pause")

    @staticmethod
    def _samples_per_step(args: Any) -> int:
        return int(args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size))

    def _catch_interrupt(self) -> None:
        """In the main thread: the first Ctrl-C stops the run at a step boundary; the next one interrupts."""
        if threading.current_thread() is not threading.main_thread() or self.background:
            return
        previous = signal.getsignal(signal.SIGINT)
        run = self.run
        if previous is None or run is None:
            return

        def stop_at_boundary(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once
            run.stop()
            print(f"note: stopping at the end of step {run.step + 1} (Ctrl-C again interrupts now)")

        self._sigint = previous
        signal.signal(signal.SIGINT, stop_at_boundary)

    def _release_interrupt(self) -> None:
        if self._sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._sigint)
        self._sigint = None
