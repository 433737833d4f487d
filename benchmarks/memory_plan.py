"""Benchmark: the memory plan's estimates against the measured peak of real training steps, on CPU.

For tiny GPT-2 / Llama (64 token samples of 36–48 tokens) and a tiny MLP (256 (x, y) pairs), each with
a rank-4 adapter, at batch sizes 4, 16, 64, with and without gradient checkpointing: ``plan_memory``
(the full measure ``%lora plan`` prints), the plan a run measures at its start (``run.memory_plan``),
and the measured peak: the model's weight bytes plus the most tensor bytes alive at once during two
real ``lora_nb.train`` steps, every allocation counted by ``TrackedAllocations`` (exact bytes, not RSS;
the data is built before the measured block).

    python benchmarks/memory_plan.py
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from helpers import classification_pairs, ragged_token_items, tiny_gpt2, tiny_llama, tiny_mlp

import lora_nb
from lora_nb.core.training.memory.allocations import TrackedAllocations
from lora_nb.core.training.memory.plan import weight_bytes

MB = 2**20


def token_items(n=64, width=48):
    return ragged_token_items(n, width)


def pairs():
    return list(zip(*classification_pairs(256)))


def row(name, build, data, batch, checkpointing):
    torch.manual_seed(0)
    model = build()
    lora_nb.attach(model, r=4)
    plan = lora_nb.plan_memory(model, data(), batch_size=batch, device="cpu", grad_checkpointing=checkpointing)
    items = data()
    with TrackedAllocations() as tracked:
        run = lora_nb.train(model, items, steps=2, batch_size=batch, background=False,
                            grad_checkpointing=checkpointing)
    measured = weight_bytes(model) + tracked.peak
    start = run.memory_plan.total
    return (f"| {name} | {batch} | {'on' if checkpointing else 'off'} | {plan.total / MB:.3f} | {start / MB:.3f} | "
            f"{measured / MB:.3f} | {plan.total / measured:.2f} | {start / measured:.2f} |")


def main() -> None:
    warnings.simplefilter("ignore")
    print("| model | batch | grad ckpt | plan MB | run-start MB | measured MB | plan/measured | run-start/measured |")
    print("|---|---|---|---|---|---|---|---|")
    for name, build, data in (("tiny GPT-2", tiny_gpt2, token_items), ("tiny Llama", tiny_llama, token_items),
                              ("tiny MLP", tiny_mlp, pairs)):
        for batch in (4, 16, 64):
            for checkpointing in (False, True) if build is not tiny_mlp else (False,):
                print(row(name, build, data, batch, checkpointing), flush=True)


if __name__ == "__main__":
    main()
