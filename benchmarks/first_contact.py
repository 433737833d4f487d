"""Benchmark: the first contact with lora_nb in a fresh kernel, cell by cell (what a newcomer waits for).

A fresh kernel (jupyter_client, tiny GPT-2 on the CPU) runs: ``%load_ext lora_nb`` → ``%lora attach`` →
a one-step ``%lora train … --wait`` with the live view → a second one → the first and second
``%lora spectrum`` → the first and second ``%lora toggle``. Each cell's time is measured from the
execute request to the kernel's idle, and for the trains also to the first output of the live view
("on screen"). The ratios first/second show what is paid once: the bar is ≤ 3 for each, and the
first live view on screen within 1 s of pressing run.

Run: python benchmarks/first_contact.py [--repo /path/to/checkout] [--kernels 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SETUP = """\
import torch
from transformers import GPT2Config, GPT2LMHeadModel
cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=101, n_positions=64, bos_token_id=0, eos_token_id=0,
                 pad_token_id=0)
model = GPT2LMHeadModel(cfg).eval()
seq = torch.arange(1, 40) % 97 + 1
data = [{"input_ids": seq.roll(i)[:12], "labels": seq.roll(i)[:12]} for i in range(16)]
"""
TRAIN = "%lora train model --data data --steps 1 --device cpu --wait"
CELLS = [("setup", SETUP), ("load_ext", "%load_ext lora_nb"), ("attach", "%lora attach model --r 4"),
         ("train 1", TRAIN), ("train 2", TRAIN), ("spectrum 1", "%lora spectrum model"),
         ("spectrum 2", "%lora spectrum model"), ("toggle 1", "%lora toggle model"), ("toggle 2", "%lora toggle model")]
SHOWN = {"display_data", "execute_result", "comm_open"}
# optional cell before the first %lora train: the same one-step training without a view (``--ui text``; a
# checkout without ``--ui`` trains through the API), so torch's and the loop's first-call costs are paid there
WARM_TORCH = ("train, no view", """\
import lora_nb
try:
    get_ipython().run_line_magic("lora", "train model --data data --steps 1 --device cpu --wait --ui text")
except Exception:
    lora_nb.train(model, data, steps=1, device="cpu", background=False)""")


def measure(repo: str, warm_torch: bool = False) -> dict[str, dict]:
    """Per cell: seconds to idle, and seconds to its first shown output."""
    cells = CELLS[:3] + [WARM_TORCH] + CELLS[3:] if warm_torch else CELLS
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    out = {}
    try:
        for name, code in cells:
            t0 = time.perf_counter()
            msg_id = kc.execute(code)
            first, error = None, None
            while True:
                msg = kc.get_iopub_msg(timeout=300)
                kind = msg["msg_type"]
                if kind in SHOWN and first is None:
                    first = time.perf_counter() - t0
                if kind == "error":
                    error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
                if (kind == "status" and msg["content"]["execution_state"] == "idle"
                        and msg["parent_header"].get("msg_id") == msg_id):
                    break
            out[name] = {"seconds": time.perf_counter() - t0, "first_output": first, "error": error}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return out


def median_times(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """Per cell, the median over fresh kernels (a shared machine's noise hits single runs hard)."""
    import statistics

    out = {}
    for name in runs[0]:
        firsts = [r[name]["first_output"] for r in runs if r[name]["first_output"] is not None]
        out[name] = {"seconds": statistics.median(r[name]["seconds"] for r in runs),
                     "first_output": statistics.median(firsts) if firsts else None,
                     "error": next((r[name]["error"] for r in runs if r[name]["error"]), None)}
    return out


def ratios(times: dict[str, dict]) -> dict[str, float]:
    return {k: times[f"{k} 1"]["seconds"] / times[f"{k} 2"]["seconds"] for k in ("train", "spectrum", "toggle")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="lora_nb checkout to measure")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    parser.add_argument("--kernels", type=int, default=3, help="fresh kernels to run; medians are reported")
    parser.add_argument("--warm-torch", action="store_true",
                        help="train one step without a view before the first %%lora train, so the ratio shows "
                             "what the view layer pays once, not torch's first forward/backward")
    args = parser.parse_args()
    times = median_times([measure(args.repo, args.warm_torch) for _ in range(args.kernels)])
    r = ratios(times)
    if args.json:
        print(json.dumps({"times": times, "ratios": r}))
        return 0
    print(f"lora_nb from {args.repo}; median of {args.kernels} fresh kernels"
          + ("; one step trained without a view first" if args.warm_torch else ""))
    for name, t in times.items():
        first = f"{t['first_output']:.2f}" if t["first_output"] is not None else "-"
        print(f"  {name:11s} {t['seconds']:6.2f} s  (first output after {first} s)"
              + (f"  ERROR {t['error']}" if t["error"] else ""))
    print("  first/second: " + ", ".join(f"{k} {v:.2f}×" for k, v in r.items()))
    return 1 if any(t["error"] for t in times.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
