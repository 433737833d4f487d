"""Latency of switching adapters off, on, and between two adapters on a model with ≥ 200 adapted modules.

Run: ``python benchmarks/toggle.py [--layers 32] [--reps 1000]``. Prints the model size and the median
(and 90th percentile) wall time of lora_nb's calls (``disable``, ``enable``, ``enable(model, other)``)
next to peft's own calls on the same model, each timed with ``time.perf_counter`` over many repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch


def build(layers: int):
    """A tiny-width Llama with ``layers`` decoder layers: 7 adapted linear layers each."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=64, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median and 90th percentile in milliseconds."""
    for _ in range(10):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * len(samples))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    from peft.tuners.lora import LoraLayer

    import lora_nb
    from lora_nb.core import find

    model = build(args.layers)
    lora_nb.attach(model, name="one", r=8)
    lora_nb.attach(model, name="two", r=8)
    session = find(model)
    adapted = sum(isinstance(m, LoraLayer) for m in model.modules())
    params = sum(p.numel() for p in model.parameters())
    print(f"model: tiny Llama, {args.layers} layers, {params:,} parameters, {sum(1 for _ in model.modules()):,} "
          f"modules, {adapted} adapted modules, 2 adapters (r=8); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    names = iter(["one", "two"] * args.reps * 2)
    rows = {
        "lora_nb.disable (off)": lambda: lora_nb.disable(model),
        "lora_nb.enable (on)": lambda: lora_nb.enable(model),
        "lora_nb.enable(model, other) (switch)": lambda: lora_nb.enable(model, next(names)),
        "peft disable_adapter_layers": session.lora.disable_adapter_layers,
        "peft enable_adapter_layers": session.lora.enable_adapter_layers,
        "peft set_adapter (switch)": lambda: session.peft.set_adapter(next(names)),
    }
    print(f"{'call':40s} {'median ms':>10s} {'p90 ms':>8s}   ({args.reps} repetitions each)")
    for label, fn in rows.items():
        median, p90 = timed(fn, args.reps)
        print(f"{label:40s} {median:10.3f} {p90:8.3f}")


if __name__ == "__main__":
    main()
