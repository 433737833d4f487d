"""Benchmark: what lora_nb's training loop + live dashboard cost over a hand-written torch loop.

The same peft model (a small GPT-2, LoRA r=8 on every linear layer), data (a DataLoader of
token batches), optimizer (AdamW), schedule (cosine), clipping (1.0) and steps, trained by:

  (a) a minimal hand-written loop (forward, backward, clip, step, one ``loss.item()`` per step);
  (b) ``lora_nb.train`` with the live dashboard attached headless: its widgets talk to a dummy
      comm that counts the messages and bytes a frontend would receive;
  (c) transformers' ``Trainer`` with its notebook progress callback (``NotebookProgressCallback``;
      its HTML displays go to a null stdout here).

With ``--in-kernel`` the CPU section runs inside a real IPython kernel (started with jupyter_client) and (b) is
``%lora train`` typed as a user types it there: the live view displayed, its widgets on the kernel's real comms,
the run in the background thread a notebook gets by default, timed from the magic call to the run's end (view
construction and everything a run does before and after its steps included). This process plays the frontend:
it reads every IOPub message and counts the widget traffic.

(a) and (b) alternate in chunks (a b, b a, …) so machine noise hits both alike; each chunk is a
fresh run (new optimizer) of ``steps / rounds`` steps. Timed: the ``train`` call (b) and the loop
(a); the dashboard's construction is timed separately. With CUDA present, a GPU section reports
tokens/s and peak memory of (a) and (b) on the GPU (bf16 autocast on GPUs with native bf16, else fp32).

Run: python benchmarks/train_overhead.py [--steps 1000] [--rounds 10] [--threads 1] [--layers 2 --embd 64]
     [--skip-trainer] [--in-kernel]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch
from torch.utils.data import DataLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import lora_nb  # noqa: E402
from lora_nb.core.training.precision import choose_precision  # noqa: E402


def build(device: str = "cpu", n_layer: int = 4, n_embd: int = 256):
    """A GPT-2 with random weights and LoRA r=8 on every linear layer (same seed → same model)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=4, vocab_size=2000, n_positions=128)
    model = GPT2LMHeadModel(cfg).to(device)
    lora_nb.attach(model, r=8)
    return model


def loader(n: int = 512, length: int = 64, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 2000, (n, length), generator=g)
    items = [{"input_ids": row, "labels": row} for row in ids]
    return DataLoader(items, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(2))


def hand_loop(model, data: DataLoader, steps: int, lr: float = 2e-4, bf16: bool = False,
              step_times: list | None = None) -> tuple[float, float]:
    """(a): the loop a user would write; returns (wall seconds, CPU seconds of this process). ``step_times``:
    a list that gets each step's wall seconds (batch drawn through optimizer step, as ``lora_nb`` records them)."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    model.train()
    losses, it, t0, c0 = [], iter(data), time.perf_counter(), time.process_time()
    for _ in range(steps):
        t_step = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(data)
            batch = next(it)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step_times is not None:
            step_times.append(time.perf_counter() - t_step)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    return seconds, cpu


class Wire:
    """Counts what the dashboard's widgets send to a frontend: while training, and the rest (widget openings)."""

    def __init__(self) -> None:
        import comm

        self.training = False
        self.messages = self.bytes = self.plot_updates = 0  # sent while ``lora_nb.train`` runs
        self.other_bytes = 0  # sent outside it: opening the widgets
        wire = self

        class CountingComm(comm.DummyComm):
            def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
                size = len(json.dumps(data, default=str)) + sum(memoryview(b).nbytes for b in buffers or ())
                if not wire.training:
                    wire.other_bytes += size
                    return
                state = (data or {}).get("state", {})
                wire.messages, wire.bytes = wire.messages + 1, wire.bytes + size
                wire.plot_updates += str(state.get("value", "")).startswith("<svg")  # a new picture of the curves

        comm.create_comm = lambda *a, **k: CountingComm(*a, **k)


def lora_nb_run(model, data: DataLoader, steps: int, wire: Wire | None,
                precision: str = "auto") -> tuple[float, float, float, float]:
    """(b): ``lora_nb.train`` with a live dashboard; returns (wall s, CPU s, dashboard build s, s inside steps)."""
    from lora_nb.widgets.live import LiveDashboard

    t0 = time.perf_counter()
    dash = LiveDashboard()
    built = time.perf_counter() - t0
    wire = wire or Wire()
    wire.training = True
    t0, c0 = time.perf_counter(), time.process_time()
    run = lora_nb.train(model, data, steps=steps, lr=2e-4, callbacks=[dash], background=False, seed=None,
                        precision=precision)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    wire.training = False
    assert run.state == "finished", run.message
    return seconds, cpu, built, sum(r["seconds"] for r in run.history)


def magic_run(model, data: DataLoader, steps: int, wire: Wire | None = None) -> tuple[float, float, float, float]:
    """(b) inside a kernel: ``%lora train`` with its default live view and background run, timed to the run's end;
    returns (wall s, CPU s of the kernel process, 0: the view's construction is inside the timed call, s inside
    steps)."""
    from IPython import get_ipython

    ip = get_ipython()
    ip.user_ns.update(bench_model=model, bench_data=data)
    t0, c0 = time.perf_counter(), time.process_time()
    run = ip.run_line_magic("lora", f"train bench_model --data bench_data --steps {steps} --lr 2e-4")
    run.wait()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert run.state == "finished", run.message
    return seconds, cpu, 0.0, sum(r["seconds"] for r in run.history)


def trainer_run(model, data: DataLoader, steps: int) -> tuple[float, float, str]:
    """(c): transformers' Trainer on the same peft model; returns (wall s, CPU s, which progress callback)."""
    from transformers import Trainer, TrainingArguments
    from transformers.utils.notebook import NotebookProgressCallback

    session = lora_nb.core.find(model)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=8, learning_rate=2e-4,
                                 lr_scheduler_type="cosine", max_grad_norm=1.0, weight_decay=0.0, report_to=[],
                                 save_strategy="no", use_cpu=True, dataloader_num_workers=0, logging_steps=50,
                                 disable_tqdm=True)
        trainer = Trainer(model=session.peft, args=args, train_dataset=data.dataset,
                          data_collator=data.collate_fn)
        which = "default (no progress display)"
        try:
            trainer.add_callback(NotebookProgressCallback)
            which = "NotebookProgressCallback"
        except Exception as exc:  # pragma: no cover - depends on the transformers version
            which = f"default ({type(exc).__name__})"
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.train()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    return seconds, cpu, which


def cpu_section(steps: int, rounds: int, skip_trainer: bool, layers: int, embd: int, in_kernel: bool = False) -> None:
    torch.manual_seed(0)
    model, data = build(n_layer=layers, n_embd=embd), loader()
    chunk = steps // rounds
    run_b = magic_run if in_kernel else lora_nb_run
    wire = None if in_kernel else Wire()  # in a kernel the comms are real; the frontend side counts the traffic
    hand_loop(model, data, 20)  # warm up kernels, allocator and both code paths
    run_b(model, data, 20, wire)
    probe = hand_loop(model, data, 30)[0] / 30
    print(f"model: GPT-2 {layers}×{embd}, LoRA r=8 on all linear layers; batch 8×64 tokens; "
          f"plain step {probe * 1e3:.1f} ms" + ("; (b) is `%lora train` in this kernel" if in_kernel else ""))
    wall, cpu, ratios, built = {"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0}, [], 0.0
    inside = {"a": 0.0, "b": 0.0}  # seconds inside steps (batch drawn through optimizer step)
    for r in range(rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        now = {}
        for which in order:
            if which == "a":
                times: list[float] = []
                now["a"] = hand_loop(model, data, chunk, step_times=times)
                inside["a"] += sum(times)
            else:
                *now["b"], build_s, steps_s = run_b(model, data, chunk, wire)
                built, inside["b"] = built + build_s, inside["b"] + steps_s
        for k in "ab":
            wall[k], cpu[k] = wall[k] + now[k][0], cpu[k] + now[k][1]
        ratios.append(now["b"][0] / now["a"][0])
        print(f"  round {r + 1:2d}: wall a {now['a'][0]:6.2f} s, b {now['b'][0]:6.2f} s, b/a {ratios[-1]:.3f}; "
              f"CPU b/a {now['b'][1] / now['a'][1]:.3f} (load {os.getloadavg()[0]:.1f})")
    total, a, b = chunk * rounds, wall["a"], wall["b"]
    print(f"(a) hand-written loop : {a:8.2f} s wall, {cpu['a']:8.2f} s CPU for {total} steps "
          f"({a / total * 1e3:.2f} ms/step)")
    print(f"(b) lora_nb.train+live: {b:8.2f} s wall, {cpu['b']:8.2f} s CPU for {total} steps "
          f"({b / total * 1e3:.2f} ms/step)")
    print(f"    b/a = {b / a:.3f} wall (median of rounds {statistics.median(ratios):.3f}), "
          f"{cpu['b'] / cpu['a']:.3f} CPU time")
    print(f"    where: steps {inside['b'] / total * 1e3:.2f} vs {inside['a'] / total * 1e3:.2f} ms (b/a "
          f"{inside['b'] / inside['a']:.3f}); between steps {(b - inside['b']) / total * 1e3:.2f} vs "
          f"{(a - inside['a']) / total * 1e3:.2f} ms per step; outside (b)'s steps per run "
          f"{(b - inside['b']) / rounds:.2f} s")
    if wire is not None:
        print(f"    dashboard traffic : {wire.plot_updates / b:.2f} plot updates/s, {wire.messages / b:.1f} comm "
              f"messages/s, {wire.bytes / b / 1024:.1f} KiB/s while training ({wire.messages} messages, "
              f"{wire.bytes / 2**20:.2f} MiB)")
        print(f"    per dashboard, outside b: build {built / rounds:.2f} s, widget opening "
              f"{wire.other_bytes / rounds / 1024:.1f} KiB")
    if not skip_trainer:
        c, c_cpu, which = trainer_run(model, data, total)
        print(f"(c) transformers.Trainer [{which}]: {c:8.2f} s wall, {c_cpu:8.2f} s CPU; "
              f"c/a = {c / a:.3f} wall, {c_cpu / cpu['a']:.3f} CPU time")


def gpu_section(steps: int) -> None:
    if not torch.cuda.is_available():
        print("GPU section: skipped (no CUDA)")
        return
    device = torch.device("cuda")
    bf16 = choose_precision(device).name == "bf16"  # the hand loop has no scaler: fp32 where auto means fp16
    model = build("cuda", n_layer=12, n_embd=768)
    data = loader(n=1024, length=128, batch_size=16)
    tokens = steps * 16 * 128
    hand_loop(model, data, 10, bf16=bf16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    a = hand_loop(model, data, steps, bf16=bf16)[0]
    peak_a = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    b = lora_nb_run(model, data, steps, Wire(), "bf16" if bf16 else "fp32")[0]
    torch.cuda.synchronize()
    peak_b = torch.cuda.max_memory_allocated(device) / 2**20
    name = torch.cuda.get_device_name(device)
    print(f"GPU {name}: GPT-2 12×768, LoRA r=8, batch 16×128, {'bf16 autocast' if bf16 else 'fp32'}, {steps} steps")
    print(f"(a) hand loop : {tokens / a:10,.0f} tokens/s, peak {peak_a:,.0f} MiB")
    print(f"(b) lora_nb   : {tokens / b:10,.0f} tokens/s, peak {peak_b:,.0f} MiB; b/a = {b / a:.3f}")


def in_a_kernel(argv: list[str]) -> None:
    """Run this script's CPU section inside a fresh IPython kernel; this process reads its IOPub like a frontend,
    prints its output and counts the widget messages (comm_open / comm_msg) the kernel sent."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    code = (f"import sys, importlib.util\n%load_ext lora_nb\n"
            f"spec = importlib.util.spec_from_file_location('train_overhead', {os.path.abspath(__file__)!r})\n"
            f"bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)\n"
            f"bench.main({argv!r}, kernel=True)\n")
    counts, started = {"comm_msg": [0, 0], "comm_open": [0, 0], "display_data": [0, 0]}, time.perf_counter()
    try:
        msg_id = kc.execute(code)
        while True:
            msg = kc.get_iopub_msg(timeout=3600)
            kind, content = msg["msg_type"], msg["content"]
            if kind in counts:
                counts[kind][0] += 1
                counts[kind][1] += len(json.dumps(content, default=str)) + sum(len(b) for b in msg.get("buffers", []))
            elif kind == "stream":
                print(content["text"], end="", flush=True)
            elif kind == "error":
                print("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle" and \
                    msg["parent_header"].get("msg_id") == msg_id:
                break
        reply = kc.get_shell_msg(timeout=60)["content"]
        if reply["status"] != "ok":
            raise SystemExit(f"the kernel's run failed: {reply.get('ename')}: {reply.get('evalue')}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    wall = time.perf_counter() - started
    print("what the frontend received over the whole session (warm-up, rounds and the Trainer run): "
          + ", ".join(f"{n} {k} ({b / 2**20:.2f} MiB)" for k, (n, b) in counts.items())
          + f" in {wall:.0f} s")


def main(argv: list[str] | None = None, kernel: bool = False) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--gpu-steps", type=int, default=300)
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for every variant (1: steadiest on a shared machine)")
    parser.add_argument("--in-kernel", action="store_true",
                        help="run the CPU section in an IPython kernel, (b) being `%%lora train` with its live view")
    args = parser.parse_args(argv)
    if args.in_kernel and not kernel:
        return in_a_kernel(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    if not args.skip_cpu:
        cpu_section(args.steps, args.rounds, args.skip_trainer, args.layers, args.embd, in_kernel=kernel)
        print(f"load average after the CPU section: {os.getloadavg()[0]:.2f}")
    if not kernel:  # in a kernel only the CPU section runs (the GPU one patches comms for its counting)
        gpu_section(args.gpu_steps)


if __name__ == "__main__":
    main()
