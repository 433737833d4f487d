"""What a run adds for long runs, as callbacks placed before the views: checked before the run starts.

In order: ``Resume`` (a checkpoint back before the first step), ``GradCheckpointing``, the memory
plan (``run.memory_plan``, one line at the start), ``BestTracker`` (``run.best``; early stopping and
restore-best), ``Sampler`` (``run.samples``) and ``Checkpointer`` (last, so a checkpoint holds
what the others did at that step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ....errors import OptionError
from ..callbacks import Callback
from ..memory.first_step import FirstStepActivations, plenty_of_ram
from ..memory.plan import make_plan, static_plan
from ..memory.recompute import GradCheckpointing, check_grad_checkpointing
from .early_stop import BestTracker
from .resume import Checkpointer, Resume
from .samples import Sampler, check_can_sample

if TYPE_CHECKING:  # pragma: no cover
    from ..loop import Loop
    from ..run import PreparedRun, TrainRun


class MemoryPlanner(Callback):
    """The run's memory plan (``run.memory_plan``): measured when the run begins, or on its first step when
    memory cannot be short (CPU with plenty of free RAM: no extra forward; ``first_step.py``)."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.first: FirstStepActivations | None = None

    def on_train_begin(self, run: TrainRun) -> None:
        loop, s = self.loop, self.loop.settings
        plan = static_plan(loop.model, loop.params, s, run.device)
        if run.device.type == "cpu" and not s.grad_checkpointing and plenty_of_ram(plan):
            self.first = FirstStepActivations(loop.model, plan, loop.batches, s.batch_size)
            self.first.start()
        else:
            autocast = loop.autocast
            # a loss_fn(model, batch) is the user's code, which the measurement does not call unasked; a
            # forward-only count cannot see what gradient checkpointing recomputes in backward, so that case
            # measures fully
            plan = make_plan(loop.model, loop.params, loop.batches, s, run.device, autocast,
                             measure=not run.custom_loss, quick=not s.grad_checkpointing)
        run.memory_plan = plan

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        if self.first is not None:
            self.first.finish(self.loop.step_positions, self.loop.settings.grad_accum)
            self.first = None

    def on_train_end(self, run: TrainRun) -> None:
        if self.first is not None:  # the run ended before its first step did
            self.first.stop()


class RunAdditions:
    """The long-run options of one run, checked now (one-line errors, before anything changes)."""

    def __init__(self, session: Any, prepared: PreparedRun) -> None:
        s, model = prepared.settings, session.model
        self.session, self.prepared = session, prepared
        if s.patience is not None and prepared.eval_batches is None:
            raise OptionError("early stopping (patience) needs evaluation data (`eval_data=…`)")
        if s.restore_best and prepared.eval_batches is None:
            raise OptionError("`restore_best=True` needs evaluation data (`eval_data=…`)")
        if s.sample_prompts:
            check_can_sample(model, prepared.tokenizer)
        if s.grad_checkpointing:
            check_grad_checkpointing(model)
        self.resume = Resume(session, s.resume, prepared.max_steps, s) if s.resume else None

    def callbacks(self, loop: Loop) -> list[Callback]:
        s, prepared, session = self.prepared.settings, self.prepared, self.session
        added: list[Callback] = []
        if self.resume is not None:
            self.resume.loop = loop
            added.append(self.resume)
        if s.grad_checkpointing:
            added.append(GradCheckpointing(session.model))
        added.append(MemoryPlanner(loop))
        if prepared.eval_batches is not None:
            added.append(BestTracker(loop.params, session.lock, s.patience, s.min_delta, s.restore_best))
        if s.sample_prompts:
            every = s.sample_every or max(1, prepared.max_steps // 5)
            added.append(Sampler(session.model, prepared.tokenizer, s.sample_prompts, every, s.sample_tokens))
        if s.save_every:
            added.append(Checkpointer(loop))
        return added
