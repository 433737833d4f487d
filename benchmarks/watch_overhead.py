"""Benchmark: what ``lora_nb.watch`` adds to a ``transformers.Trainer``'s time per step.

The same Trainer set-up (a small GPT-2 with random weights, LoRA r=8 from ``get_peft_model`` on its attention and
MLP projections, batches of 8 × 64 random tokens, AdamW, ``logging_steps=1`` so the watch sees every step) is
trained in one process, in alternating rounds (a b, b a, …, so machine noise hits both alike), each round a fresh
model and trainer of ``--steps`` steps:

  (a) the trainer alone;
  (b) the trainer under ``lora_nb.watch(trainer, ui="widget")``, displayed: the live dashboard and the family panels
      as JupyterLab gets them, their widgets on a dummy comm (no frontend), the spectra recorder and the
      supervised-token counter on the collator.

Timed per step: from one ``on_step_begin`` to the next (everything between two steps, every callback included),
the first two steps of each round left out (warm-up); and the whole ``trainer.train()`` call. Reported: the median
step time of (a) and (b) over all rounds and their ratio, and the ratio of the whole calls.

Run: python benchmarks/watch_overhead.py [--steps 40] [--rounds 6] [--layers 2] [--embd 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import tempfile
import time
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import lora_nb  # noqa: E402


class StepClock(TrainerCallback):
    """Times the cycle from one step's start to the next's (its last step: to the end of training)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_step_begin(self, args, state, control, **kw):
        self.starts.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kw):
        self.starts.append(time.perf_counter())

    def cycles(self, skip: int = 2) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:])][skip:]


def headless_comms() -> None:
    """Widgets talk to a dummy comm: what a frontend would receive is built and sent nowhere."""
    import comm

    comm.create_comm = lambda *a, **k: comm.DummyComm(*a, **k)


def make_trainer(steps: int, layers: int, embd: int, out: str) -> Trainer:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=layers, n_embd=embd, n_head=4, vocab_size=2000, n_positions=128, bos_token_id=0,
                     eos_token_id=0)
    model = get_peft_model(GPT2LMHeadModel(cfg), LoraConfig(r=8, target_modules=["c_attn", "c_proj", "c_fc"],
                                                            fan_in_fan_out=True))
    ids = torch.randint(0, 2000, (8 * (steps + 1), 64), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=8, logging_steps=1, report_to=[],
                             save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, lr_scheduler_type="cosine")
    return Trainer(model=model, args=args, train_dataset=data)


HOOKS = ("on_train_begin", "on_step_begin", "on_step_end", "on_log", "on_evaluate", "on_train_end")
hook_seconds: list[float] = []  # wall time inside the watch's hooks, per watched round


def timed_hooks(callback) -> list[float]:
    """Wrap the watch callback's hooks (on this instance) so the time spent inside them is added up."""
    spent = [0.0]
    for name in HOOKS:
        hook = getattr(callback, name)

        def timed(*args, _hook=hook, **kwargs):
            t0 = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        setattr(callback, name, timed)
    return spent


def one_round(watched: bool, steps: int, layers: int, embd: int, out: str) -> tuple[list[float], float]:
    trainer = make_trainer(steps, layers, embd, out)
    clock = StepClock()
    trainer.add_callback(clock)
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's PrinterCallback prints each log
        spent = None
        if watched:  # displayed, as in a notebook: its outputs go to the null stdout, its widgets to dummy comms
            view = lora_nb.watch(trainer, ui="widget")
            view._ipython_display_()
            spent = timed_hooks(view.callback)
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    assert trainer.state.global_step == steps
    if spent is not None:
        hook_seconds.append(spent[0] / steps)
    return clock.cycles(), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    headless_comms()
    steps: dict[bool, list[float]] = {False: [], True: []}
    totals: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as out:
        one_round(True, 3, a.layers, a.embd, out)  # warm-up: imports, first widgets
        for r in range(a.rounds):
            for watched in ((False, True) if r % 2 == 0 else (True, False)):
                cycles, total = one_round(watched, a.steps, a.layers, a.embd, out)
                steps[watched] += cycles
                totals[watched].append(total)
            print(f"round {r + 1}: alone {statistics.median(steps[False][-len(cycles):]) * 1e3:.1f} ms/step, "
                  f"watched {statistics.median(steps[True][-len(cycles):]) * 1e3:.1f} ms/step", flush=True)
    alone, watched = statistics.median(steps[False]), statistics.median(steps[True])
    ratio_total = statistics.median(totals[True]) / statistics.median(totals[False])
    print(f"time per step (median of {len(steps[False])} steps over {a.rounds} alternating rounds of {a.steps}): "
          f"alone {alone * 1e3:.2f} ms, watched {watched * 1e3:.2f} ms: {watched / alone:.3f}x")
    print(f"whole trainer.train() (median of rounds): {ratio_total:.3f}x; load average {os.getloadavg()[0]:.1f}")
    hooks = statistics.median(hook_seconds[1:])  # the warm-up round left out
    print(f"inside the watch's hooks: {hooks * 1e3:.2f} ms per step (median of rounds) = {hooks / alone:.2%} of the "
          "step time alone (the views' drawing included; the collator's token count is not in it)")


if __name__ == "__main__":
    main()
