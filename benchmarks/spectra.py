"""Benchmark: exact ΔW spectra of a Llama-7B-shaped adapter set: batched vs per-module vs dense SVD.

r=16 LoRA on q,k,v,o (4096×4096), gate, up (11008×4096) and down (4096×11008) in 32 layers
= 224 modules. The base model lives on the meta device (no 7B weights are allocated); only
the LoRA factors are real. ``lora_nb.spectra`` runs on it exactly as on any model.

With ``--live``: the share of a real training run's wall time that two live explorers (weights
and spectrum, default 3 s refresh) spend refreshing on the training thread.

Run: python benchmarks/spectra.py [--samples 2] [--live]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

import lora_nb
from lora_nb.core.adapters.factors import layer_factors, lora_layers, one_thread, read
from lora_nb.core.analysis.learned.spectra import delta_values


def build(r: int = 16):
    """A Llama-7B-shaped model on the meta device with real (random, non-zero) LoRA factors."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=32, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lora_nb.attach(model, r=r, alpha=2 * r, targets="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    session = lora_nb.core.find(model)
    g = torch.Generator().manual_seed(0)
    for _, layer in lora_layers(session, "default"):
        for part in (layer.lora_A["default"], layer.lora_B["default"]):
            part.weight = nn.Parameter(torch.randn(part.weight.shape, generator=g) / part.weight.shape[1] ** 0.5)
    return model, session


def live_overhead(steps: int = 600) -> None:
    """Train a tiny Llama with a weights and a spectrum explorer attached; print their share of the run."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lora_nb.widgets.explorers import SpectrumExplorer, WeightsExplorer

    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=101, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg)
    lora_nb.attach(model, r=8)
    ids = torch.randint(1, 100, (64, 32), generator=torch.Generator().manual_seed(0))
    run = lora_nb.train(model, [{"input_ids": r, "labels": r} for r in ids], steps=steps, batch_size=8,
                        background=True, seed=0)
    views = [WeightsExplorer(model), SpectrumExplorer(model)]
    run.wait()
    for v in views:
        print(f"{type(v).__name__}: {v.live_refreshes} live refreshes, {v.live_seconds:.3f} s on the training thread")
    cost = sum(v.live_seconds for v in views)
    print(f"run: {run.step} steps in {run.seconds:.2f} s; live views took {100 * cost / run.seconds:.2f}% of it")


def per_module_loop(model) -> dict:
    """The spectra path before batching: copy every module's factors, then one thin-QR + r×r SVD each."""
    _, factors = read(model)
    with one_thread():
        return {f.name: delta_values(f) for f in factors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2, help="modules checked against a dense float64 SVD")
    parser.add_argument("--live", action="store_true", help="also measure live explorers during training")
    args = parser.parse_args()
    torch.manual_seed(0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load}")
    t = time.perf_counter()
    model, session = build()
    print(f"built the meta-device Llama-7B shape with real r=16 factors in {time.perf_counter() - t:.1f} s")

    n = sum(1 for _ in lora_layers(session, "default"))
    before, after = [], []
    for _ in range(3):  # interleaved, so both see the same machine load
        t = time.perf_counter()
        looped = per_module_loop(model)
        before.append(time.perf_counter() - t)
        t = time.perf_counter()
        result = lora_nb.spectra(model)
        after.append(time.perf_counter() - t)
    b, a = statistics.median(before), statistics.median(after)
    print(f"ΔW spectra of {n} modules, median of 3 (first run: before {before[0]:.3f} s, after {after[0]:.3f} s):")
    print(f"  before (copy factors, one thin-QR + r×r SVD per module): {b:.3f} s ({1e3 * b / n:.2f} ms per module)")
    print(f"  after  (lora_nb.spectra: float64 Gram per factor, one batched r×r Cholesky + SVD per shape): {a:.3f} s "
          f"({1e3 * a / n:.2f} ms per module), {b / a:.1f}× faster")
    gap = max(float(np.max(np.abs(result[k] - v) / v[0])) for k, v in looped.items())
    print(f"  largest difference before vs after, relative to σ₁ of the module: {gap:.1e}")
    times = after
    layers = dict(lora_layers(session, "default"))
    q = "model.layers.0.self_attn.q_proj"
    delta = layers[q].get_delta_weight("default").detach()
    dense_by_threads = {}
    for threads in sorted({1, torch.get_num_threads()}, reverse=True):  # the dense path at its best
        torch.set_num_threads(threads)
        t = time.perf_counter()
        torch.linalg.svdvals(delta)
        dense_by_threads[threads] = time.perf_counter() - t
    torch.set_num_threads(max(dense_by_threads))
    print("dense svdvals by thread count: " + ", ".join(f"{k}: {v:.2f} s" for k, v in dense_by_threads.items()))
    dense = min(dense_by_threads.values())
    per_module = statistics.median(times) / n
    f = layer_factors(q, layers[q], "default")
    reps = []
    for _ in range(50):
        t = time.perf_counter()
        with one_thread():  # as spectra() runs it
            delta_values(f)
        reps.append(time.perf_counter() - t)
    same = statistics.median(reps)
    print(f"dense torch.linalg.svdvals of one 4096×4096 ΔW (float32, as from get_delta_weight): {dense:.2f} s (best)")
    print(f"low-rank values of that same module: {1e3 * same:.2f} ms (median of 50)")
    print(f"speed-up per module: {dense / per_module:,.0f}× vs the average module of the full run, "
          f"{dense / same:,.0f}× on the same 4096×4096 module")

    sampled = [q, "model.layers.17.self_attn.v_proj", "model.layers.31.self_attn.o_proj"][: args.samples]
    worst = 0.0
    for name in sampled:
        t = time.perf_counter()
        ref = torch.linalg.svdvals(layers[name].get_delta_weight("default").detach().double())[:16]
        print(f"  dense float64 svdvals of {name}: {time.perf_counter() - t:.2f} s")
        err = float(((torch.from_numpy(result[name]) - ref).abs() / ref).max())
        worst = max(worst, err)
        print(f"  {name}: max relative error vs dense float64 = {err:.2e}")
    print(f"max relative error over {len(sampled)} sampled modules: {worst:.2e}")
    if args.live:
        live_overhead()


if __name__ == "__main__":
    main()
