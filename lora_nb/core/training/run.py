"""``TrainRun`` (one run: state, history, controls) and ``prepare_run``, which every way of training starts from.

A run is watched through callbacks (``run.add_callback``); it displays nothing itself.
How a run ends (``run.state``):

- ``"finished"``: all steps done. ``"stopped"``: ``run.stop()``, ``%lora stop`` or Ctrl-C, at a
  step boundary; the adapter keeps every completed step.
- ``"failed"``: ``run.message`` says why in one line, ``run.error`` / ``run.traceback`` hold the
  exception. NaN/inf policy: a non-finite loss ends the run and restores the adapter to its
  weights before the last update (the last state known to give a finite loss); a non-finite
  gradient norm ends it without applying that update. Out of memory: the step is undone, memory
  released, and the message suggests a smaller batch.

``run.history`` holds one dict per optimizer step: ``step``, ``loss``, ``lr``, ``grad_norm``,
``samples_per_s``, ``tokens_per_s`` (token data: real tokens, padding left out), ``padding`` (share of the
step's token positions that were padding), ``seconds`` (wall time of the step), ``memory_mb``
(CUDA allocated on GPU, process RSS on CPU), ``peak_memory_mb`` (CUDA only), ``time`` (s since
start) and ``epoch``; in fp16 runs also ``loss_scale`` and ``skipped_steps`` (steps so far whose scaled
gradients overflowed: the scaler skipped their update, their ``grad_norm`` is None; see ``precision.py``);
``run.evals`` one dict per evaluation: ``step``, ``eval_loss``, ``time``;
``run.spectra_history`` ΔW's singular values per module every few steps (see ``spectra_history``).
``run.best``, ``run.samples``, ``run.memory_plan``: see ``longrun.additions`` (checkpoints, resume, early
stopping, samples and the memory plan are callbacks the run places before the views).
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ...errors import OptionError, TrainingError
from ...frontend import background_default
from .. import registry
from ..adapters.status import adapter_named_parameters
from ..kinds import check_data_kinds
from ..types import RunState
from .callbacks import Callback
from .concurrent import claim
from .data.batches import Batches, make_batches, takes_model
from .device import place_model, resolve_device
from .longrun.additions import RunAdditions
from .longrun.spectra_history import SpectraHistory, SpectraRecorder
from .loop import Loop
from .precision import choose_precision
from .reporting import loss_change
from .settings import TrainSettings

if TYPE_CHECKING:  # pragma: no cover
    from .memory.plan import MemoryPlan

__all__ = ["PreparedRun", "RunState", "TrainRun", "launch", "prepare_run", "start_run", "trainable_parameters"]


@dataclass(eq=False)
class TrainRun:
    """One training run of one adapter: its state, history, and controls (stop, pause, resume, wait)."""

    model: torch.nn.Module
    adapter: str
    settings: TrainSettings
    max_steps: int
    device: torch.device
    where: str  # e.g. "cuda:0, bf16 autocast (native bf16 on compute capability 8.0)"
    data: str  # what the data was, in a few words
    background: bool = False
    custom_loss: bool = False
    state: RunState = "running"
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    message: str = ""
    error: BaseException | None = None
    traceback: str | None = None
    callbacks: list[Callback] = field(default_factory=list)
    best: dict | None = None  # {"step", "eval_loss"} of the lowest eval loss so far
    samples: list[dict] = field(default_factory=list)  # {"step", "prompt", "text"} generated while training
    sample_seconds: float = 0.0  # time spent generating samples (not in any step's "seconds")
    memory_plan: MemoryPlan | None = None  # the MemoryPlan measured when the run began
    trainable: int = 0  # parameters the run trains (the capacity gauge sets them against supervised tokens)
    stop_reason: str = ""  # why the run stopped itself (early stopping), for its message
    spectra_history: SpectraHistory = field(default_factory=SpectraHistory)  # ΔW's singular values over the run

    def __post_init__(self) -> None:
        self._stop, self._resume, self._done = threading.Event(), threading.Event(), threading.Event()
        self._holding = threading.Event()  # set by the loop while a paused run waits at a step boundary
        self._resume.set()
        self._lock = threading.Lock()
        self._begun = self._ended = False  # set by the loop when it calls on_train_begin / on_train_end
        self._thread: threading.Thread | None = None
        self._t0 = time.perf_counter()
        self._seconds: float | None = None

    @property
    def step(self) -> int:
        """Optimizer steps completed."""
        return len(self.history)

    @property
    def seconds(self) -> float:
        """Wall time of the run so far (its whole length once it ended)."""
        return self._seconds if self._seconds is not None else time.perf_counter() - self._t0

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stop_requested(self) -> bool:
        """True once ``stop()`` was called (the loop ends the run at the next step boundary)."""
        return self._stop.is_set()

    def hold_while_paused(self) -> None:
        """The loop, at a step boundary: block while the run is paused, until it is resumed or stopped; meanwhile
        ``wait_paused`` returns (the step before is done)."""
        if self._resume.is_set():
            return
        self._holding.set()
        try:
            while not self._resume.wait(0.1):
                if self._stop.is_set():
                    return
        finally:
            self._holding.clear()

    def wait_ended(self, timeout: float | None = None) -> bool:
        """Block until the run is marked ended (``mark_ended``) or ``timeout`` passed; True when it ended."""
        return self._done.wait(timeout)

    def begin(self) -> tuple[Callback, ...]:
        """The loop's start: from now on a late ``add_callback`` gets ``on_train_begin`` itself; returns the
        callbacks to call ``on_train_begin`` on now."""
        with self._lock:
            self._begun = True
            return tuple(self.callbacks)

    def end(self) -> tuple[Callback, ...]:
        """After ``finish``: from now on a late ``add_callback`` gets ``on_train_end`` itself; returns the
        callbacks to call ``on_train_end`` on now."""
        with self._lock:
            self._ended = True
            return tuple(self.callbacks)

    def mark_ended(self) -> None:
        """The last act of whatever drove the run: ``done`` turns True and ``wait`` returns."""
        self._done.set()

    def start_thread(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a daemon thread that prints where the run was started (``wait`` joins it)."""
        context = contextvars.copy_context()  # output of the thread goes where the run was started
        self._thread = threading.Thread(target=context.run, args=(work,), name=f"lora_nb-train-{self.adapter}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the run at the next step boundary; the adapter keeps what it learned."""
        self._stop.set()
        self._resume.set()

    def pause(self) -> None:
        """Hold the run at the next step boundary until ``resume()``."""
        with self._lock:
            if self.state == "running":
                self.state = "paused"
                self._resume.clear()

    def wait_paused(self, timeout: float = 30.0) -> bool:
        """Block until a paused run holds at a step boundary (the step in flight is done) or ended; False when
        ``timeout`` seconds passed first."""
        end = time.monotonic() + timeout
        while self.state == "paused" and not self._holding.is_set() and not self.done:
            if time.monotonic() > end:
                return False
            self._holding.wait(0.01)
        return True

    def resume(self) -> None:
        with self._lock:
            if self.state == "paused":
                self.state = "running"
                self._resume.set()

    def wait(self, timeout: float | None = None) -> "TrainRun":
        """Block until the run has ended (or ``timeout`` seconds passed); returns the run."""
        self._done.wait(timeout)
        if self._thread is not None and self._done.is_set():
            self._thread.join(timeout)
        return self

    def add_callback(self, callback: Callback) -> None:
        """Watch this run from now on; a late joiner gets ``on_train_begin`` now (and ``on_train_end`` if it ended)."""
        with self._lock:
            if not self._begun:
                self.callbacks.append(callback)
                return
        callback.on_train_begin(self)
        with self._lock:
            ended = self._ended
            if not ended:
                self.callbacks.append(callback)
        if ended:
            callback.on_train_end(self)

    def summary_line(self) -> str:
        change = loss_change([r["loss"] for r in self.history])
        loss = f"; {change}" if change else ""
        where = self.where.partition(" (")[0]  # the device and precision; the first line gave the reason
        return f"{self.step}/{self.max_steps} steps on {where} in {self.seconds:.1f} s{loss}"

    def summary(self) -> dict:
        """What the run did, as stored in ``session.records[adapter]["runs"]``."""
        s = self.settings
        return {"state": self.state, "steps": self.step, "max_steps": self.max_steps,
                "final_loss": self.history[-1]["loss"] if self.history else None,
                "final_eval_loss": self.evals[-1]["eval_loss"] if self.evals else None,
                "lr": s.lr, "batch_size": s.batch_size, "grad_accum": s.grad_accum, "schedule": s.schedule,
                "warmup": s.warmup, "seed": s.seed, "seconds": round(self.seconds, 3), "data": self.data,
                "device": self.where, "message": self.message,
                "trainable": self.trainable,
                "supervised_tokens": self.history[-1].get("supervised_tokens", 0) if self.history else 0}

    def __repr__(self) -> str:
        head = f"TrainRun({self.state}: adapter `{self.adapter}`, {self.summary_line()}"
        return head + (f"; {self.message}" if self.state in ("failed", "stopped") else "") + ")"

    def finish(self, state: RunState, message: str) -> None:
        """Mark the run ended (``state``, one-line ``message``) and record it with its adapter."""
        with self._lock:
            self._seconds = time.perf_counter() - self._t0
            self.state, self.message = state, message or self.summary_line()
        session = registry.find(self.model)
        if session is not None:
            record = session.records.setdefault(self.adapter, {"options": {}, "runs": []})
            record.setdefault("runs", []).append(self.summary())

    def call_hook(self, callback: Callback, hook: str, *args: Any) -> None:
        """``callback.hook(run, *args)``; a watcher that raises is detached and reported once, and the run goes on.

        Only an ``essential`` callback's exception propagates (it ends the run).
        """
        try:
            getattr(callback, hook)(self, *args)
        except Exception as exc:
            if getattr(callback, "essential", False):
                raise
            with self._lock:
                if callback in self.callbacks:
                    self.callbacks.remove(callback)
            registry.report_failed_listener(callback, hook, exc)


@dataclass
class PreparedRun:
    """A run decided before it starts: its settings, batches, eval batches, length and the parameters it trains."""

    settings: TrainSettings
    batches: Batches
    eval_batches: Batches | None
    max_steps: int
    params: list[torch.nn.Parameter]
    tokenizer: Any = None


def prepare_run(session: Any, data: Any, eval_data: Any, tokenizer: Any, loss_fn: Any, settings: TrainSettings,
                params: list[torch.nn.Parameter] | None = None, world: int = 1) -> PreparedRun:
    """Prepare a run of ``session``'s active adapter (or of ``params``) over ``world`` processes sharing the data.

    Fills in ``settings.eval_every`` (a tenth of the run) when eval data is given without it.
    """
    check_data_kinds(session.model, data, eval_data, tokenizer, loss_fn, takes_model(loss_fn))
    params = trainable_parameters(session) if params is None else params
    limit = settings.max_length
    for attr in ("n_positions", "max_position_embeddings"):
        limit = min(limit, getattr(getattr(session.model, "config", None), attr, None) or limit)
    kw = dict(tokenizer=tokenizer, loss_fn=loss_fn, batch_size=settings.batch_size, seed=settings.seed,
              max_length=limit)
    batches = make_batches(data, shuffle=True, group_by_length=settings.group_by_length, **kw)
    eval_batches = None if eval_data is None else make_batches(eval_data, shuffle=False, **kw)
    per_process = None if batches.per_epoch is None else math.ceil(batches.per_epoch / world)
    if settings.steps is not None:
        max_steps = settings.steps
    elif per_process is None:
        raise OptionError("the data has no length: give `steps=…`")
    else:
        max_steps = max(1, math.ceil((settings.epochs or 1.0) * per_process / settings.grad_accum))
    if eval_batches is not None and settings.eval_every is None:
        settings.eval_every = max(1, max_steps // 10)
    return PreparedRun(settings, batches, eval_batches, max_steps, params, tokenizer)


def start_run(session: Any, run: TrainRun, work: Callable[[], None], background: bool,
              names: dict[str, str] | None = None) -> TrainRun:
    """Make ``run`` the session's run and start ``work`` (a loop or a process driver), in a thread when ``background``.

    ``session``: a registry ``Session``, or any object with ``model``, ``lock``, ``run``, ``last_train``,
    ``ensure_idle`` and ``notify``. ``names``: the notebook names of the data, kept with the settings as
    ``session.last_train`` (what ``export`` and the dashboard's form start from).
    """
    with session.lock:
        session.ensure_idle("start another training run")
        session.run = run
        session.last_train = registry.TrainRecipe(asdict(run.settings), dict(names or {}))
    session.notify("train")  # open views (explorers, panels) follow the run from its first step
    if not background:
        work()
        return run
    run.start_thread(work)
    return run


def launch(session: Any, name: str, prepared: PreparedRun, background: bool | None = None,
           callbacks: list[Callback] | None = None, custom_loss: bool = False,
           names: dict[str, str] | None = None) -> TrainRun:
    """Train ``prepared.params`` of ``session.model`` in this process with lora_nb's loop; the run is called ``name``.

    ``session`` may be a plain holder (``vs_full`` trains a model copy's own weights this way, through the
    same loop).
    """
    settings = prepared.settings
    target = resolve_device(settings.device)
    additions = RunAdditions(session, prepared)
    precision = choose_precision(target, settings.precision)
    where = f"{target}, {precision.describe()}"
    background = background_default() if background is None else bool(background)
    recorder = SpectraRecorder(settings.spectra_every)  # first, so views see this step's spectra
    run = TrainRun(session.model, name, settings, prepared.max_steps, target, where, prepared.batches.description,
                   background=background, custom_loss=custom_loss, callbacks=[recorder, *(callbacks or [])],
                   trainable=sum(p.numel() for p in prepared.params))
    claim(run, session)  # before seeding: refused beside another run here when either has dropout (concurrent.py)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    place_model(session.model, target)
    loop = Loop(run, session, prepared.batches, prepared.eval_batches, prepared.params, precision)
    run.callbacks[:0] = additions.callbacks(loop)
    return start_run(session, run, loop, background, names)


def trainable_parameters(session: Any) -> list[torch.nn.Parameter]:
    """The active adapter's parameters, after checking the model can train at all."""
    from peft.tuners.lora import LoraLayer

    model = session.model
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise TrainingError(f"cannot train: {len(meta)} parameters (e.g. {meta[0]}) are on the meta device "
                            "(empty or offloaded weights); load real weights first")
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if any(layer.disable_adapters for layer in layers):
        raise TrainingError("the adapters are off; turn them on first (`lora_nb.enable(model)`)")
    if any(layer.merged for layer in layers):
        raise TrainingError("the adapter is merged into the base weights; unmerge it first (`lora_nb.unmerge(model)`)")
    params = [p for _, p in adapter_named_parameters(model, session.active)]
    if not params:
        raise TrainingError(f"adapter `{session.active}` has no parameters to train")
    return params
