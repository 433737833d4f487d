"""Benchmark: a ~1.1B-parameter Llama-shaped model (TinyLlama-1.1B's shape, random weights from a config, nothing
downloaded) with LoRA r=16 on its attention and MLP projections, trained 20 steps by ``lora_nb.train``; prints
tokens/s (steps after the first two) and the CUDA allocator's peak memory, and one JSON line.

Run on a CUDA GPU: python benchmarks/llama_1b.py [--steps 20] [--batch 4] [--length 512] [--precision auto]
``--tiny`` builds a 2-layer model of the same family and runs on the CPU (checks the script anywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lora_nb

SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)  # TinyLlama-1.1B
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=256)
TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def build(shape: dict, device: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(torch.bfloat16 if device == "cuda" else torch.float32)  # a base as it is usually loaded


def token_rows(n: int, length: int, vocab: int) -> list[dict]:
    ids = torch.randint(1, vocab, (n, length), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "labels": row} for row in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model on the CPU (checks the script)")
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    shape = TINY if args.tiny else SHAPE
    t0 = time.perf_counter()
    model = build(shape, device)
    params = sum(p.numel() for p in model.parameters())
    lora_nb.attach(model, r=16, alpha=32, targets=TARGETS)
    built = time.perf_counter() - t0
    data = token_rows(args.batch * args.steps, args.length, shape["vocab_size"])
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    run = lora_nb.train(model, data, steps=args.steps, batch_size=args.batch, lr=1e-4, device=device,
                        precision=args.precision, background=False, max_length=args.length)
    assert run.state == "finished", run.message
    timed = run.history[2:] or run.history
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    losses = [r["loss"] for r in run.history]
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{name}: Llama {params / 1e9:.2f}B parameters ({shape['num_hidden_layers']} layers × "
          f"{shape['hidden_size']}), LoRA r=16 on {TARGETS}; {run.where}")
    print(f"batch {args.batch} × {args.length} tokens, {run.step} steps: median {tokens_per_s:,.0f} tokens/s "
          f"(steps 3–{run.step}), peak {'n/a' if peak is None else f'{peak:.2f} GiB'} allocated; "
          f"loss {losses[0]:.3f} → {losses[-1]:.3f}; built in {built:.1f} s, trained in {run.seconds:.1f} s")
    print(json.dumps({"device": name, "parameters": params, "where": run.where, "batch": args.batch,
                      "length": args.length, "steps": run.step, "tokens_per_s": round(tokens_per_s),
                      "peak_gib": None if peak is None else round(peak, 3),
                      "skipped_steps": run.history[-1].get("skipped_steps"), "first_loss": losses[0],
                      "last_loss": losses[-1]}))


if __name__ == "__main__":
    main()
