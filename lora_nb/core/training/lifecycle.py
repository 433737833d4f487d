"""One run's lifecycle, the same for every way of training: begin → steps → end, every hook emitted from here.

A ``RunSource`` makes the steps: lora_nb's ``Loop`` in this process, the process driver relaying the records
of rank 0, or any other trainer that can say what each step did. ``Lifecycle(run, source)()`` drives it:

1. ``source.setup()``, then ``on_train_begin`` to the run's callbacks (``run.begin``: a callback added later
   gets it from ``add_callback``);
2. each event ``source.events()`` yields: ``("step", record)`` goes to ``run.history`` and ``on_step_end``,
   ``("eval", record)`` to ``run.evals`` and ``on_evaluate``;
3. the ending: ``source.outcome()`` once the events ran out; ``"stopped"`` on Ctrl-C; ``"failed"`` on any other
   exception, with ``source.describe``'s line and the exception in ``run.error`` / ``run.traceback``;
4. always: ``source.cleanup``, ``run.finish``, ``on_train_end`` (``run.end``) and, last, ``run.mark_ended``.

A trainer that calls back instead of being driven (a ``transformers`` Trainer watched by ``core.watch``) pushes the
same events: ``Lifecycle(run)`` without a source, then ``begin()``, ``record(kind, record)`` per event (or its own
append and ``emit``) and ``end(state, message)``. A callback that raises is detached by ``TrainRun.call_hook``; only
an ``essential`` one ends the run.
"""

from __future__ import annotations

import traceback
from collections.abc import Generator
from typing import TYPE_CHECKING, Literal, Protocol

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..types import RunState
    from .callbacks import Callback
    from .run import TrainRun

KEPT = "the adapter keeps what it learned"
Event = tuple[Literal["step", "eval"], dict]
Events = Generator[Event, None, None]
HOOKS = {"step": "on_step_end", "eval": "on_evaluate"}


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error from CUDA, MPS or the CPU allocator."""
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


class RunSource(Protocol):
    """What makes a run's steps; the ``Lifecycle`` does everything around them."""

    def setup(self) -> None:
        """Before ``on_train_begin``: whatever the steps need (an exception fails the run)."""

    def events(self) -> Events:
        """The run's steps and evaluations as they happen, until the run is done or stopped."""

    def outcome(self) -> tuple[RunState, str]:
        """How the run ended once ``events`` ran out: ``("finished", "")`` or ``("stopped", why)`` or a failure
        the source learned of without an exception."""

    def describe(self, exc: BaseException, hook: str | None) -> str:
        """One line saying how the run failed; ``hook`` names the callback that raised it (None: the source)."""

    def cleanup(self, failed: bool) -> None:
        """After the last event, however the run ended (``failed``: release what the failure left behind)."""


class Lifecycle:
    """Drives one ``TrainRun`` from a ``RunSource``: ``Lifecycle(run, source)()`` returns once the run ended."""

    def __init__(self, run: TrainRun, source: RunSource | None = None) -> None:
        self.run, self.source = run, source  # no source: the events are pushed (``begin``, ``record``, ``end``)
        self.hook: str | None = None  # "callback Name.hook" while a callback runs, for the failure's line

    def __call__(self) -> None:
        run, source = self.run, self.source
        assert source is not None, "a Lifecycle without a source is pushed its events, not called"
        state: RunState = "finished"
        message = ""
        try:
            source.setup()
            self.begin()
            self.follow(source.events())
            state, message = source.outcome()
        except KeyboardInterrupt:
            state, message = "stopped", f"interrupted at step {run.step}/{run.max_steps}; {KEPT}"
        except BaseException as exc:  # every failure ends the run; the kernel lives on
            state, message = "failed", source.describe(exc, self.hook)
            run.error, run.traceback = exc, traceback.format_exc()
            if is_oom(exc):
                traceback.clear_frames(exc.__traceback__)  # frames hold the step's activations
        finally:
            source.cleanup(failed=state == "failed")
        self.end(state, message)

    def follow(self, events: Events) -> None:
        """Record each event in the run and tell the callbacks (closing ``events`` however this ends)."""
        try:
            for kind, record in events:
                self.record(kind, record)
        finally:
            events.close()  # the source's own ``finally`` blocks run now, however this ended

    def begin(self) -> None:
        """``on_train_begin`` to the run's callbacks (from now on one added later gets it from ``add_callback``)."""
        self.emit("on_train_begin", self.run.begin())

    def record(self, kind: Literal["step", "eval"], record: dict) -> None:
        """A step (``run.history``, ``on_step_end``) or an evaluation (``run.evals``, ``on_evaluate``)."""
        (self.run.history if kind == "step" else self.run.evals).append(record)
        self.emit(HOOKS[kind], None, record)

    def end(self, state: RunState, message: str) -> None:
        """Mark the run ended (``run.finish``), ``on_train_end`` to its callbacks, and, last, ``run.mark_ended``."""
        run = self.run
        run.finish(state, message)
        try:
            self.emit("on_train_end", run.end())
        finally:
            run.mark_ended()

    def emit(self, hook: str, which: tuple[Callback, ...] | None, *args: object) -> None:
        """Call ``hook`` on ``which`` callbacks (default: the run's current ones); a failing view is detached."""
        for cb in which if which is not None else tuple(self.run.callbacks):
            self.hook = f"callback {type(cb).__name__}.{hook}"
            self.run.call_hook(cb, hook, *args)
        self.hook = None
