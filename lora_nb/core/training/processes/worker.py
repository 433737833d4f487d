"""What each process of a multi-process run does: lora_nb's one ``Loop``, with DDP from ``Accelerator``.

Used by ``train(..., processes=N)`` (processes forked from the kernel by accelerate's
``notebook_launcher``) and by scripts written by ``export`` (processes started by ``accelerate
launch``). Each process trains the same adapter on its shard of the data; DDP averages the adapter's
gradients; a per-step callback all-reduces the loss, throughput and the Stop/Pause flags so that every
process leaves the loop at the same step boundary and no process waits alone in a collective.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...adapters.status import adapter_named_parameters
from ..callbacks import Callback
from ..data.batches import Batches
from ..loop import Loop
from ..precision import choose_precision
from ..run import PreparedRun, TrainRun

WEIGHTS = "adapter.safetensors"


@dataclass
class Job:
    """Everything a process needs; ``channel``/``stop``/``pause`` are None in a launched script."""

    session: Any
    prepared: PreparedRun  # settings, batches (each process takes its shard), eval batches, steps, parameters
    cpu: bool
    custom_loss: bool
    out: str  # folder where rank 0 leaves the adapter's weights (and, in a script, history.json)
    channel: Any = None  # queue to the kernel: ("step"|"eval", record), ("end", ...), ("error", ...)
    stop: Any = None
    pause: Any = None


class WorkerFailed(SystemExit):
    """Ends a process whose loop failed with a non-zero exit, so the launcher stops the others."""


class _DDPLoop(Loop):
    """The training ``Loop`` with the model wrapped in DDP once its trainable flags are set."""

    def __init__(self, *args: Any, accelerator: Any) -> None:
        super().__init__(*args)
        self.accelerator = accelerator

    def setup(self) -> None:
        super().setup()
        from torch.nn.parallel import DistributedDataParallel as DDP

        # only the adapter is synchronised: the frozen base and buffers are identical everywhere already
        skip = [n for n, p in self.model.named_parameters() if not p.requires_grad]
        DDP._set_params_and_buffers_to_ignore_for_model(self.model, skip + [n for n, _ in self.model.named_buffers()])
        self.model = self.accelerator.prepare_model(self.model)


class _Sync(Callback):
    """Per step: agree on loss (mean), throughput (sum), Stop and Pause over all processes; rank 0 reports."""

    essential = True  # a process that stops agreeing would leave the others waiting in a collective

    def __init__(self, accelerator: Any, job: Job) -> None:
        self.acc, self.job = accelerator, job
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.every = max(1, job.prepared.max_steps // 20)

    def _agree(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def _flags(self) -> tuple[float, float]:
        job = self.job
        return (float(job.stop is not None and job.stop.is_set()), float(job.pause is not None and job.pause.is_set()))

    def on_step_end(self, run: TrainRun, record: dict) -> None:
        loss, sps, tps, stop, pause = self._agree(record["loss"], record["samples_per_s"],
                                                  record.get("tokens_per_s", 0.0), *self._flags())
        record.update(loss=loss / self.world, samples_per_s=sps, processes=self.world)
        if tps:
            record["tokens_per_s"] = tps
        self.send("step", record)
        while pause and not stop:  # every process polls in step, so they leave the pause together
            time.sleep(0.05)
            stop, pause = self._agree(*self._flags())
        if stop:
            run.stop()

    def on_evaluate(self, run: TrainRun, record: dict) -> None:
        self.send("eval", record)

    def send(self, kind: str, record: dict) -> None:
        if self.rank != 0:
            return
        if self.job.channel is not None:
            self.job.channel.put((kind, dict(record)))
        elif kind == "eval" or record["step"] % self.every == 0 or record["step"] == self.job.prepared.max_steps:
            values = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k in ("loss", "eval_loss", "lr"))
            print(f"step {record['step']}/{self.job.prepared.max_steps} {values}", flush=True)


def run_worker(job: Job) -> None:
    """Train in this process (one of N); rank 0 leaves the adapter's weights in ``job.out``."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=job.cpu)
    if acc.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, acc.num_processes)))
    prepared = job.prepared
    if prepared.settings.seed is not None:
        torch.manual_seed(prepared.settings.seed + acc.process_index)
    session, model = job.session, job.session.model
    model.to(acc.device)
    loader = acc.prepare_data_loader(prepared.batches.loader)  # this process's shard; even_batches pads the last
    batches = Batches(loader, len(loader), prepared.batches.loss, prepared.batches.description)
    params = [p for _, p in adapter_named_parameters(model, session.active)]  # this process's copy of the model
    precision = choose_precision(acc.device, prepared.settings.precision)
    run = TrainRun(model, session.active, prepared.settings, prepared.max_steps, acc.device,
                   f"{acc.device}, {precision.describe()}", batches.description, custom_loss=job.custom_loss,
                   callbacks=[_Sync(acc, job)])
    _DDPLoop(run, session, batches, prepared.eval_batches, params, precision, accelerator=acc)()
    if acc.process_index == 0:  # the adapter at its last good state, however the loop ended
        write_result(job, session, run)
    if run.state == "failed":
        if job.channel is not None:
            job.channel.put(("error", acc.process_index, run.message, run.traceback or ""))
        else:
            print(f"process {acc.process_index}: {run.message}\n{run.traceback or ''}", flush=True)
        raise WorkerFailed(1)
    if job.channel is not None and acc.process_index == 0:
        job.channel.put(("end", run.state, run.message))
    acc.wait_for_everyone()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def write_result(job: Job, session: Any, run: TrainRun) -> None:
    """Rank 0: the adapter's weights (written then renamed, so a reader never sees half a file)."""
    from safetensors.torch import save_file

    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().to("cpu").contiguous() for n, p in adapter_named_parameters(session.model, session.active)}
    save_file(weights, str(out / f".{WEIGHTS}.tmp"))
    os.replace(out / f".{WEIGHTS}.tmp", out / WEIGHTS)
    if job.channel is None:  # a launched script: the adapter in PEFT format and the curve beside it
        from ...adapters.io import save

        save(session.model, out / "adapter", overwrite=True)  # the job's own output folder
        (out / "history.json").write_text(json.dumps({"state": run.state, "history": run.history,
                                                      "evals": run.evals}, indent=1))
