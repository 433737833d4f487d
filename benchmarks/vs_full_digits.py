"""LoRA vs full fine-tuning on scikit-learn's digits (offline), through ``%lora vs-full``: the measured table.

Run: ``python benchmarks/vs_full_digits.py [--threads 1] [--head] [--width 256] [--steps 200] [--sizes …]``.
An MLP 64→W→W→10 (W=256 by default) is pretrained on digits 0–4 (30 epochs, AdamW), then adapted to digits 5–9
(half of them to train, half to evaluate) by both arms: LoRA r=4 on the hidden layers ``0`` and
``2`` (with ``--head``, the output layer ``4`` is trained in full beside it), and a full fine-tune.
Prints the wall time of the pretraining and of the whole comparison, then the result table.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return torch.tensor(x, dtype=torch.float32)[perm] / 16, torch.tensor(y)[perm]


def pretrained(x: torch.Tensor, y: torch.Tensor, width: int, epochs: int = 30) -> nn.Module:
    """The MLP trained on digits 0–4 only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: tiny models step fastest)")
    parser.add_argument("--head", action="store_true", help="LoRA arm also trains the output layer in full")
    parser.add_argument("--width", type=int, default=256, help="hidden width of the MLP")
    parser.add_argument("--steps", default="200")
    parser.add_argument("--sizes", default="25,50,100,400")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from IPython.core.interactiveshell import InteractiveShell

    x, y = digits()
    started = time.perf_counter()
    model = pretrained(x[y < 5], y[y < 5], args.width)
    print(f"pretraining on digits 0-4: {time.perf_counter() - started:.1f} s")
    new_x, new_y = x[y >= 5], y[y >= 5]
    half = len(new_x) // 2
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lora_nb")
    shell.user_ns.update(model=model, train=(new_x[:half], new_y[:half]), test=(new_x[half:], new_y[half:]))
    line = (f"vs-full model --data train --eval test --r 4 --targets 0,2 --steps {args.steps} --sizes {args.sizes}"
            + (" --modules-to-save 4" if args.head else ""))
    print(f"%lora {line}   ({half} training examples, {len(new_x) - half} eval, {args.threads} thread(s))")
    started = time.perf_counter()
    result = shell.run_line_magic("lora", line)
    print(f"vs-full (both arms + {len(result.sizes)}-size sweep): {time.perf_counter() - started:.1f} s\n")
    print(result)


if __name__ == "__main__":
    main()
