"""Ctrl-C through a real kernel (``interrupt_kernel``) at random instants of attach / merge / combine / load /
detach: after each, the model has a session whose adapters match its LoRA layers, or no session and no LoRA
layer; detach puts the base weights back bit for bit; Ctrl-C raises again; attach works."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from helpers import kernel_reply

TESTS = Path(__file__).parent

SETUP = """
import json, signal, torch, lora_nb
from helpers import make_b_nonzero, tiny_mlp
from lora_nb.core import registry
torch.set_num_threads(1)
torch.manual_seed(0)
model = tiny_mlp()
base = {n: p.detach().clone() for n, p in model.named_parameters()}
lora_nb.attach(model, r=4, targets="0,2", name="a"); make_b_nonzero(model, "a")
saved = str(lora_nb.save(model, SAVED)); lora_nb.detach(model)

def cycle():
    lora_nb.attach(model, r=4, targets="0,2", name="a"); make_b_nonzero(model, "a")
    lora_nb.attach(model, r=2, targets="0", name="b")
    lora_nb.merge(model, "a")
    lora_nb.combine(model, ["a", "b"], [0.5, 0.5], name="mix", combination_type="cat")
    lora_nb.load(model, saved, name="loaded")
    lora_nb.detach(model)

def check():
    session, layers = registry.find(model), registry.adapters_in_layers(model)
    whole = (session is None and not layers) or (session is not None and set(session.adapters) == layers)
    if session is not None:
        lora_nb.detach(model)
    exact = all(torch.equal(p, base[n]) for n, p in model.named_parameters())
    lora_nb.attach(model, r=2, targets="0"); lora_nb.detach(model)
    print(json.dumps({"whole": whole, "exact": exact, "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler}))
"""


def _kernel():
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _reply(kc, msg_id: str, timeout: float = 120) -> tuple[str, str]:
    """The cell's stdout and how it ended ("ok", "KeyboardInterrupt" or the error's traceback)."""
    out, error = kernel_reply(kc, msg_id, timeout)
    if error is None:
        return out, "ok"
    return out, error["ename"] if error["ename"] == "KeyboardInterrupt" else "\n".join(error["traceback"])


@pytest.mark.slow
def test_ctrl_c_at_random_instants_in_a_real_kernel(tmp_path):
    rounds, rng = 25, random.Random(0)
    km, kc = _kernel()
    try:
        out, ended = _reply(kc, kc.execute(SETUP.replace("SAVED", repr(str(tmp_path / "saved")))))
        assert ended == "ok", ended
        results = []
        for _ in range(rounds):
            msg_id = kc.execute("while True:\n    cycle()")
            time.sleep(rng.uniform(0.05, 0.6))
            km.interrupt_kernel()
            _, ended = _reply(kc, msg_id)
            assert ended == "KeyboardInterrupt", ended
            out, ended = _reply(kc, kc.execute("check()"))
            assert ended == "ok", ended
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        km.shutdown_kernel(now=True)
        kc.stop_channels()
    bad = [r for r in results if not all(r.values())]
    print(f"\nreal-kernel Ctrl-C: {rounds} tried, {rounds - len(bad)} survived")
    assert not bad, f"{len(bad)} of {rounds}: {bad[:3]}"

