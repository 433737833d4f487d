"""Data-parallel training over N processes from the notebook: ``train(..., processes=N)``.

The kernel's own model is what trains. accelerate's ``notebook_launcher`` forks N workers from the
kernel (N GPUs over NCCL, or N CPU processes over gloo); each runs lora_nb's one training ``Loop``
with the model in DDP (see ``worker.run_worker``). Rank 0 streams its records (loss averaged, throughput summed
over processes) through a queue to this run's ``TrainRun``, so callbacks and the live dashboard work
unchanged; at the end it writes the adapter's weights, which are copied into the user's model under
``session.lock``. Stop/Pause are shared events that every process agrees on at a step boundary.

Limits: fork needs CUDA untouched in the kernel (keep the model on the CPU until the run starts), no
``Accelerator`` created in the kernel, and bitsandbytes not imported there (accelerate refuses);
the kernel's copy of the adapter changes only when the run ends. For a worker failure that kills the
processes, the adapter stays as it was before the run unless rank 0 got to write its weights.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import multiprocessing
import queue
import shutil
import socket
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ....errors import OptionError, TrainingError, first_line
from ....frontend import background_default
from ... import registry
from ...adapters.status import adapter_named_parameters
from ...types import RunState
from ..data.batches import takes_model
from ..lifecycle import Events, Lifecycle
from ..run import PreparedRun, TrainRun, prepare_run, start_run
from .worker import WEIGHTS, Job, run_worker

_FORK = multiprocessing.get_context("fork")
AUTOGRAD_AFTER_FORK = "autograd's threading in combination with fork-based multiprocessing"  # torch's words


class WorkerError(TrainingError):
    """A worker process failed; ``str`` is the one-line reason, ``TrainRun.traceback`` the worker's."""


@dataclass(eq=False, repr=False)
class ProcessRun(TrainRun):
    """A ``TrainRun`` whose steps happen in other processes: Stop and Pause reach them through shared events."""

    processes: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._shared_stop, self._shared_pause, self._queue = _FORK.Event(), _FORK.Event(), _FORK.Queue()

    def stop(self) -> None:
        super().stop()
        self._shared_stop.set()

    def pause(self) -> None:
        super().pause()
        if self.state == "paused":
            self._shared_pause.set()

    def resume(self) -> None:
        super().resume()
        self._shared_pause.clear()

    def summary(self) -> dict:
        return {**super().summary(), "processes": self.processes}

    def job(self, session: registry.Session, prepared: PreparedRun, cpu: bool, out: str) -> Job:
        """What every worker process gets: the prepared run, where to write the weights, and this run's channels."""
        return Job(session, prepared, cpu, self.custom_loss, out, self._queue, self._shared_stop, self._shared_pause)


def check_launchable(processes: int, device: str, model: torch.nn.Module) -> bool:
    """Whether the processes run on CPU (else one per GPU), or a one-line error why they cannot start here."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        raise TrainingError("a torch.distributed process group is already running in this kernel; "
                            "multi-process training starts its own")
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:
        raise TrainingError("an accelerate Accelerator was already created in this kernel, and accelerate cannot "
                            "launch processes after that: restart the kernel and start the run before creating one")
    if "bitsandbytes" in sys.modules:
        raise TrainingError("bitsandbytes is imported in this kernel, and accelerate will not fork processes after "
                            "that: train a quantized model in one process, or export it (`lora_nb.export(model)`) "
                            "and `accelerate launch` it")
    if len({p.device for p in model.parameters()}) > 1:
        raise OptionError("this model is spread over several devices (device_map): it trains in one process; "
                          "drop `processes=…`")
    name = str(device).strip().lower()
    if name not in ("auto", "cpu", "cuda"):
        raise OptionError(f"with processes > 1 the device is auto, cpu or cuda (one process per GPU); got `{device}`")
    gpus = 0 if name == "cpu" else torch.cuda.device_count()
    if name == "cpu" or (name == "auto" and gpus == 0):
        return True
    if gpus < processes:
        raise OptionError(f"{processes} processes need {processes} GPUs; this machine has {gpus} "
                          "(`device=\"cpu\"` for CPU processes)")
    if torch.cuda.is_initialized():
        raise TrainingError("CUDA is already in use in this kernel, and forked processes cannot use it after that: "
                            "restart the kernel and keep the model on the CPU until the run starts, or export the run "
                            "(`lora_nb.export(model)`) and use `accelerate launch`")
    return False


def launch_processes(session: registry.Session, settings: Any, data: Any, eval_data: Any, tokenizer: Any,
                     loss_fn: Any, background: bool | None, callbacks: list | None,
                     names: dict[str, str] | None = None) -> ProcessRun:
    """Start a ``settings.processes``-process run of ``session``'s active adapter; returns its ``ProcessRun``."""
    n = settings.processes
    cpu = check_launchable(n, settings.device, session.model)
    prepared = prepare_run(session, data, eval_data, tokenizer, loss_fn, settings, world=n)
    device = torch.device("cpu") if cpu else torch.device("cuda", 0)
    where = f"{n} processes × {'CPU (gloo)' if cpu else 'GPU (nccl)'}"
    background = background_default() if background is None else bool(background)
    run = ProcessRun(session.model, session.active, settings, prepared.max_steps, device, where,
                     prepared.batches.description,
                     background=background, custom_loss=takes_model(loss_fn), callbacks=list(callbacks or []),
                     processes=n)
    out = tempfile.mkdtemp(prefix="lora_nb-processes-")
    driver = _Driver(run, session, run.job(session, prepared, cpu, out))
    start_run(session, run, driver, background=True, names=names)  # a thread either way
    if not background:
        _wait_interruptibly(run)
    return run


def _wait_interruptibly(run: ProcessRun) -> None:
    """Block until the run ends; Ctrl-C stops it at the next step boundary (all processes together)."""
    while True:
        try:
            if run.wait_ended(0.1):
                break
        except KeyboardInterrupt:
            run.stop()
    run.wait()


class _Driver:
    """The ``RunSource`` of a multi-process run: runs the launcher, yields rank 0's records as the run's steps, and
    says how the run ended (``lifecycle.py`` does the rest)."""

    def __init__(self, run: ProcessRun, session: registry.Session, job: Job) -> None:
        self.run, self.session, self.job = run, session, job
        self.ended: tuple | None = None  # rank 0's ("end", state, message)
        self.errors: list[tuple] = []  # ("error", rank, message, traceback) in arrival order
        self.failure: BaseException | None = None  # what the launcher raised (how a dead worker shows up)
        self.launcher: threading.Thread | None = None

    def __call__(self) -> None:
        Lifecycle(self.run, self)()

    def setup(self) -> None:
        """Nothing: the workers set themselves up."""

    def events(self) -> Events:
        """Start the launcher in a thread and relay rank 0's messages until it returned and the queue is empty."""
        self.launcher = threading.Thread(target=contextvars.copy_context().run, args=(self._launch,), daemon=True)
        self.launcher.start()
        while True:
            try:
                message = self.job.channel.get(timeout=0.1)
            except queue.Empty:
                if not self.launcher.is_alive():
                    return
                continue
            kind = message[0]
            if kind in ("step", "eval"):
                yield kind, message[1]
            elif kind == "end":
                self.ended = message
            elif kind == "error":
                self.errors.append(message)

    def describe(self, exc: BaseException, hook: str | None) -> str:
        where = f" in {hook}" if hook else ""
        return f"{type(exc).__name__}{where} at step {self.run.step}: {first_line(exc)}"

    def cleanup(self, failed: bool) -> None:
        """Stop the workers still running (a callback failed the run) and drop the job's folder."""
        if self.launcher is not None and self.launcher.is_alive():
            self.run.stop()  # every process leaves at the next step boundary
            while self.launcher.is_alive():  # read what they still send, so none blocks on a full pipe
                with contextlib.suppress(queue.Empty):
                    self.job.channel.get(timeout=0.1)
        shutil.rmtree(self.job.out, ignore_errors=True)

    def _launch(self) -> None:
        from accelerate import notebook_launcher

        quiet = logging.getLogger("torch.distributed.elastic")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # a failed worker is reported once, by the run, not by elastic's logs
        try:
            notebook_launcher(run_worker, args=(self.job,), num_processes=self.run.processes,
                              use_port=str(_free_port()), master_addr="127.0.0.1")
        except BaseException as exc:  # the launcher raising is how a dead worker shows up
            self.failure = exc
        finally:
            quiet.setLevel(level)

    def outcome(self) -> tuple[RunState, str]:
        """The run's end state and message, after the returned weights (if any) went into the model."""
        try:
            return self._outcome(self.failure)
        except Exception as exc:  # e.g. the returned weights do not fit the adapter
            self.run.error, self.run.traceback = exc, traceback.format_exc()
            return "failed", (f"the trained weights could not be loaded back ({type(exc).__name__}: "
                              f"{first_line(exc)}); the adapter is as it was before the run")

    def _outcome(self, failure: BaseException | None) -> tuple[RunState, str]:
        run, n = self.run, self.run.processes
        loaded = self._load_weights()
        kept = "the adapter keeps the steps rank 0 completed" if loaded else "the adapter is as it was before the run"
        if self.errors:
            _, rank, message, tb = self.errors[0]
            run.error, run.traceback = WorkerError(message), tb
            if AUTOGRAD_AFTER_FORK in message:
                message = ("this kernel already ran a backward pass on a machine with a GPU, and torch's autograd "
                           "cannot run in processes forked after that: restart the kernel and start the multi-process "
                           "run before any other training, or export it (`lora_nb.export(model)`) for "
                           "`accelerate launch`")
            return "failed", f"{message} (in process {rank + 1} of {n}; {kept})"
        if failure is not None or self.ended is None:
            run.error = failure or WorkerError("the worker processes ended without a result")
            run.traceback = "".join(traceback.format_exception(run.error)) if failure is not None else None
            return "failed", f"{_describe_launch_failure(failure)} ({kept})"
        _, state, message = self.ended
        return state, ("" if state == "finished" else message)  # "" → the run's own summary line

    def _load_weights(self) -> bool:
        """Copy rank 0's adapter weights into the user's model; False when there were none."""
        from safetensors.torch import load_file

        path = Path(self.job.out) / WEIGHTS
        if not path.exists():
            return False
        tensors = load_file(str(path))
        params = dict(adapter_named_parameters(self.session.model, self.run.adapter))
        if set(tensors) != set(params) or any(tensors[n].shape != p.shape for n, p in params.items()):
            raise TrainingError(f"the workers returned {len(tensors)} tensors that do not match the adapter's "
                                f"{len(params)} (names or shapes): not loaded")
        with self.session.lock, torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[name])
        return True


def _describe_launch_failure(exc: BaseException | None) -> str:
    """One line for a launch that failed without a worker's own report (a crash, a kill, a launcher error)."""
    if exc is None:
        return "the worker processes ended without reporting a result"
    failures = getattr(exc, "failures", None)
    if failures:
        rank, info = sorted(failures.items())[0]
        return f"worker process {rank + 1} died (exit code {info.exitcode})"
    return f"the processes could not start: {type(exc).__name__}: {first_line(exc)}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
