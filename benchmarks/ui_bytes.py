"""Benchmark: what lora_nb's views send from the kernel to the front end, and what a saved story notebook weighs.

A fresh kernel (jupyter_client) runs the story: attach → train with the live dashboard → toggle →
spectrum → weights → similarity → compare → history → intruders → dashboard → vs-full. For each cell
every iopub message the kernel sends that a front end would render or sync is counted (comm_open, comm_msg,
display_data, update_display_data, execute_result): its content as JSON plus binary buffers
("payload"), and with the message envelope (header, parent header, metadata: "wire"). The live
rate is the steady state of the run: the bytes the view sends while the run trains (after the view opened,
before its closing picture), per second of that window. Then the same story
runs through nbclient with widget state stored, and the saved notebook's size is reported.

Run the same script against another checkout (e.g. main, with plotly FigureWidget views) to compare:
  python benchmarks/ui_bytes.py --repo /path/to/checkout [--steps 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

COUNTED = {"comm_open", "comm_msg", "comm_close", "display_data", "update_display_data", "execute_result"}

SETUP = """\
%load_ext lora_nb
import torch, lora_nb
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
x = torch.randn(256, 16); pairs = (x, x[:, :5].argmax(1)); probe = x[:8]
lora_nb.attach(model, r=8); lora_nb.attach(model, r=4, name="second"); lora_nb.enable(model, "default")
metric = lambda m: float(m(probe).pow(2).mean())
"""


def story(steps: int) -> list[tuple[str, str]]:
    """``(name, code)`` of each cell of the story."""
    return [
        ("setup", SETUP),
        ("train (live)", f"run = %lora train model --data pairs --steps {steps} --lr 1e-3 --batch-size 32"),
        ("wait", "run.wait(); print(run.state, run.step, round(run.seconds, 2))"),
        ("toggle", "%lora toggle model"),
        ("spectrum", "%lora spectrum model"),
        ("weights", "%lora weights model"),
        ("similarity", "%lora similarity model --adapter default --other second"),
        ("compare", "%lora compare model --inputs probe"),
        ("history", "%lora history model"),
        ("intruders", "%lora intruders model --metric metric"),
        ("dashboard", "%lora dashboard model"),
        ("vs-full (live)", "res = %lora vs-full model --data pairs --eval pairs --steps 200 --r 4"),
    ]


def message_bytes(msg: dict) -> tuple[int, int]:
    """(payload, wire) bytes of one iopub message."""
    buffers = sum(memoryview(b).nbytes for b in msg.get("buffers") or ())
    payload = len(json.dumps(msg["content"], default=str)) + buffers
    envelope = sum(len(json.dumps(msg.get(k, {}), default=str)) for k in ("header", "parent_header", "metadata"))
    return payload, payload + envelope


def run_kernel(cells: list[tuple[str, str]], env: dict) -> list[dict]:
    """Execute ``cells`` in a fresh kernel; per cell: seconds, messages, payload and wire bytes."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=env)
    rows = []
    try:
        for name, code in cells:
            t0 = time.perf_counter()
            msg_id = kc.execute(code)
            row = {"cell": name, "messages": 0, "payload": 0, "wire": 0, "error": None, "sent": []}
            while True:
                msg = kc.get_iopub_msg(timeout=600)
                kind = msg["msg_type"]
                if kind == "error":
                    row["error"] = f"{msg['content']['ename']}: {msg['content']['evalue']}"
                if kind in COUNTED:
                    payload, wire = message_bytes(msg)
                    row["messages"] += 1
                    row["payload"] += payload
                    row["wire"] += wire
                    row["sent"].append((time.perf_counter() - t0, wire))
                if (kind == "status" and msg["content"]["execution_state"] == "idle"
                        and msg["parent_header"].get("msg_id") == msg_id):
                    break
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if name == "wait" and not row["error"]:
                reply = kc.get_shell_msg(timeout=60)
                assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return rows


def steady_rate_window(sent: list[tuple[float, int]]) -> tuple[int, float]:
    """(bytes, seconds) the live view sent while the run trained: the wait cell's messages up to 0.5 s before
    its last one (the closing picture and comm closes come together at the end)."""
    if not sent:
        return 0, 1.0
    end = sent[-1][0] - 0.5
    window = [w for t, w in sent if t <= end]
    return sum(window), max(end, 1e-9)


def saved_size(cells: list[tuple[str, str]], env: dict, out: Path) -> int:
    """Bytes of the story notebook executed by nbclient with widget state stored."""
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for _, code in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", store_widget_state=True).execute(env=env)
    nbformat.write(nb, out)
    return out.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="lora_nb checkout to measure")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--notebook", default="", help="where to save the executed story notebook")
    parser.add_argument("--skip-notebook", action="store_true")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures (for tests)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [args.repo, os.environ.get("PYTHONPATH")]))}
    cells = story(args.steps)
    rows = run_kernel(cells, env)
    print(f"lora_nb from {args.repo}; {args.steps} training steps", flush=True)
    print(f"{'cell':16s} {'seconds':>8s} {'messages':>9s} {'payload KB':>11s} {'wire KB':>9s}")
    for r in rows:
        print(f"{r['cell']:16s} {r['seconds']:8.2f} {r['messages']:9d} {r['payload'] / 1e3:11.1f} "
              f"{r['wire'] / 1e3:9.1f}" + (f"  ERROR {r['error']}" if r["error"] else ""))
    by = {r["cell"]: r for r in rows}
    live, live_s = steady_rate_window(by["wait"]["sent"])
    opens = {k: by[k]["wire"] for k in ("toggle", "spectrum", "weights", "similarity", "compare", "history",
                                        "intruders", "dashboard")}
    print(f"largest view opening: {max(opens.values()) / 1e3:.1f} KB ({max(opens, key=opens.get)}); "
          f"live training: {live / 1e3:.1f} KB in {live_s:.1f} s = {live / live_s / 1e3:.1f} KB/s")
    size = None
    if not args.skip_notebook:
        out = Path(args.notebook or f"/tmp/ui_bytes_story_{os.getpid()}.ipynb")
        size = saved_size(cells, env, out)
        print(f"story notebook saved with widget state: {size / 2**20:.2f} MiB ({out})")
    if args.json:
        print(json.dumps({"opens": opens, "live_bytes_per_s": live / live_s, "notebook_bytes": size,
                          "errors": [r["error"] for r in rows if r["error"]]}))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
