"""Multi-GPU scaling and QLoRA memory of lora_nb training (needs CUDA; on a CPU-only machine it says so, exits 0).

    python benchmarks/multi_gpu.py [--steps 30] [--layers 8] [--hidden 1024]

Prints, for a Llama-shaped model built from a config (random weights, no download):
- tokens/s of `lora_nb.train` on 1 GPU and on all GPUs (`processes=N`: accelerate's launcher, DDP), and the
  speed-up (ideal: N; per-process batch constant, so N× the tokens per step);
- peak CUDA memory of one LoRA training run with a bf16 base vs a 4-bit (nf4, bitsandbytes) base (QLoRA).
Each case runs in a fresh subprocess: multi-process training forks, which CUDA does not survive once used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch


def model_and_data(layers: int, hidden: int, n: int = 256, length: int = 256):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, vocab_size=32000,
                      max_position_embeddings=length)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": (ids := torch.randint(0, 32000, (length,), generator=g)), "labels": ids} for _ in range(n)]
    return model, data


def to_4bit(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every linear layer but the head with a bitsandbytes nf4 layer (what QLoRA loads)."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            q = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=torch.bfloat16, quant_type="nf4")
            q.load_state_dict(module.state_dict())
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, q)
    return model


def case(kind: str, args) -> dict:
    import lora_nb

    model, data = model_and_data(args.layers, args.hidden)
    if kind == "qlora":
        model = to_4bit(model)
    if kind == "bf16":
        model = model.to(torch.bfloat16)
    if kind != "multi":  # a multi-process run forks from a kernel that has not touched CUDA
        model = model.cuda()
    lora_nb.attach(model, r=16, targets="q_proj,k_proj,v_proj,o_proj")
    processes = torch.cuda.device_count() if kind == "multi" else 1
    run = lora_nb.train(model, data, steps=args.steps, batch_size=args.batch, device="cuda", processes=processes,
                        background=False)
    tail = run.history[len(run.history) // 3:]  # skip warm-up steps
    out = {"case": kind, "state": run.state, "message": run.message, "processes": processes,
           "tokens_per_s": sum(r.get("tokens_per_s", 0) for r in tail) / max(1, len(tail))}
    if kind != "multi":
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--case", choices=["single", "multi", "bf16", "qlora"])
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args)))
        return 0
    if not torch.cuda.is_available():
        print("multi_gpu: needs CUDA (no GPU here); nothing measured")
        return 0
    results = {}
    for kind in ("single", "multi", "bf16", "qlora"):
        if kind == "multi" and torch.cuda.device_count() < 2:
            print("multi: only one GPU here; scaling not measured")
            continue
        cmd = [sys.executable, __file__, "--case", kind] + [f"--{k}={v}" for k, v in
                                                            (("steps", args.steps), ("layers", args.layers),
                                                             ("hidden", args.hidden), ("batch", args.batch))]
        done = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
        if done.returncode or not lines:
            print(f"{kind}: failed\n{done.stderr[-2000:]}")
            continue
        results[kind] = json.loads(lines[-1])
        print(results[kind])
    if "single" in results and "multi" in results:
        n = results["multi"]["processes"]
        speedup = results["multi"]["tokens_per_s"] / results["single"]["tokens_per_s"]
        print(f"scaling: {results['single']['tokens_per_s']:.0f} tok/s on 1 GPU, "
              f"{results['multi']['tokens_per_s']:.0f} tok/s on {n}: {speedup:.2f}× (ideal {n}×)")
    if "bf16" in results and "qlora" in results:
        print(f"peak memory: bf16 base {results['bf16']['peak_mib']:.0f} MiB, 4-bit base "
              f"{results['qlora']['peak_mib']:.0f} MiB ({results['qlora']['peak_mib'] / results['bf16']['peak_mib']:.2f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
