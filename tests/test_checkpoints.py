"""Checkpoints a user can trust: written atomically every N steps, and a resumed run repeats the uninterrupted one."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import (
    StopAt,
    classification_pairs,
    gpt2_lora,
    kernel_reply,
    mlp_with_lora,
    tiny_mlp,
    token_items,
    wait_until,
)
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core.training.longrun import checkpoint_files as checkpoint
from lora_nb.errors import CheckpointError, LoraNBWarning, OptionError

TESTS = Path(__file__).parent
SETUP = "import torch, lora_nb\nfrom helpers import gpt2_lora, token_items\n"
OPTIONS = dict(steps=12, batch_size=4, lr=1e-2, background=False)
PAIRS = classification_pairs(40)  # 5 batches of 8 an epoch
MLP = dict(steps=12, batch_size=8, lr=1e-2, background=False)


def losses(run):
    return [r["loss"] for r in run.history]


def test_resumed_run_repeats_the_uninterrupted_one_and_keeps_the_newest(tmp_path):
    full = lora_nb.train(gpt2_lora(), token_items(), **OPTIONS)
    first = lora_nb.train(gpt2_lora(), token_items(), save_every=3, save_dir=tmp_path, keep=2,
                          callbacks=[StopAt(7)], **OPTIONS)
    assert first.state == "stopped" and first.step == 7
    assert [step for step, _ in checkpoint.complete_checkpoints(tmp_path)] == [3, 6]  # keep=2 dropped step 3's...
    saved = tmp_path / "checkpoint-000006"
    assert (saved / "adapter" / "adapter_config.json").exists()
    assert not list(saved.rglob("*.bin")) and not list(saved.rglob("*.pt"))  # safetensors + JSON, no pickle
    model = gpt2_lora()  # a fresh model
    resumed = lora_nb.train(model, token_items(), resume=tmp_path, **OPTIONS)  # the save-dir: its latest
    assert resumed.state == "finished" and resumed.step == 12
    assert max(abs(a - b) for a, b in zip(losses(resumed), losses(full))) <= 1e-6
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]  # the schedule went on
    # the epoch position: 10 items at batch 4 are 3 batches an epoch; step 7 was in the third epoch
    assert resumed.history[-1]["epoch"] == full.history[-1]["epoch"] == 4.0


def test_checkpoints_keep_the_newest_and_a_named_checkpoint_resumes_from_its_step(tmp_path):
    run = lora_nb.train(mlp_with_lora(), PAIRS, save_every=2, save_dir=tmp_path, keep=2, **MLP)
    assert [s for s, _ in checkpoint.complete_checkpoints(tmp_path)] == [10, 12]
    again = lora_nb.train(mlp_with_lora(), PAIRS, resume=tmp_path / "checkpoint-000010", **MLP)
    assert again.step == 12 and losses(again)[:10] == losses(run)[:10]
    assert abs(losses(again)[-1] - losses(run)[-1]) <= 1e-6


def test_a_failing_write_leaves_the_last_checkpoint_intact_and_the_run_going(tmp_path, monkeypatch):
    calls = []

    def disk_full(*args, **kwargs):
        calls.append(args[1])
        raise OSError(28, "No space left on device")

    lora_nb.train(mlp_with_lora(), PAIRS, save_every=3, save_dir=tmp_path, **{**MLP, "steps": 3})
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.warns(LoraNBWarning, match="could not write the checkpoint at step 1 .*No space left") as caught:
        run = lora_nb.train(mlp_with_lora(), PAIRS, save_every=1, save_dir=tmp_path, **{**MLP, "steps": 5})
    assert run.state == "finished" and run.step == 5 and len(calls) >= 5  # every write failed ...
    assert len([w for w in caught if issubclass(w.category, LoraNBWarning)]) == 1  # ... one warning per run
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # the step-3 checkpoint untouched, no half-written folder left behind


def test_resume_refuses_what_it_cannot_continue(tmp_path, ip):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        lora_nb.train(mlp_with_lora(), PAIRS, resume=tmp_path / "nowhere", **MLP)
    (tmp_path / "checkpoint-000004").mkdir()  # an interrupted write: no state.json
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        lora_nb.train(mlp_with_lora(), PAIRS, resume=tmp_path, **MLP)
    lora_nb.train(mlp_with_lora(), PAIRS, save_every=12, save_dir=tmp_path, **MLP)
    with pytest.raises(CheckpointError, match="step 12 of 12: nothing left"):
        lora_nb.train(mlp_with_lora(), PAIRS, resume=tmp_path, **MLP)
    other = tiny_mlp()
    lora_nb.attach(other, r=2)
    with pytest.raises(CheckpointError, match="does not fit adapter `default`.*wrong shape"):
        lora_nb.train(other, PAIRS, resume=tmp_path, **{**MLP, "steps": 20})
    with pytest.raises(OptionError, match="both save_every and save_dir"):
        lora_nb.train(mlp_with_lora(), PAIRS, save_every=3, **MLP)
    ip.user_ns.update(model=mlp_with_lora(), pairs=PAIRS)
    with pytest.raises(UsageError, match="nothing left to train"):
        ip.run_line_magic("lora", f"train model --data pairs --steps 12 --resume {tmp_path}")


def test_resume_with_other_settings_warns_that_it_will_not_repeat(tmp_path):
    lora_nb.train(mlp_with_lora(), PAIRS, save_every=4, save_dir=tmp_path, **{**MLP, "steps": 4})
    with pytest.warns(LoraNBWarning, match=r"batch_size 8 → 4.*will not repeat"):
        run = lora_nb.train(mlp_with_lora(), PAIRS, resume=tmp_path, **{**MLP, "batch_size": 4})
    assert run.state == "finished" and run.step == 12


# ----------------------------------------------------------------- a real kernel killed mid-run


def _kernel(env_path):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([env_path, str(TESTS)]), "OMP_NUM_THREADS": "1"}
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _execute(kc, code, timeout=120):
    """Run ``code`` in the kernel; returns its stdout (raises on an error)."""
    out, error = kernel_reply(kc, kc.execute(code), timeout)
    if error is not None:
        raise AssertionError("kernel error: " + "\n".join(error["traceback"])[-2000:])
    return out


@pytest.mark.slow
def test_a_killed_kernel_resumes_in_a_new_one_with_the_same_losses(tmp_path):
    root = str(TESTS.parent)
    save_dir = tmp_path / "ckpt"
    steps = 24
    km, kc = _kernel(root)
    try:
        _execute(kc, SETUP + textwrap.dedent(f"""
            import time, torch
            torch.set_num_threads(1)
            class Slow(lora_nb.Callback):
                def on_step_end(self, run, record):
                    time.sleep(0.25)
            model = gpt2_lora()
            run = lora_nb.train(model, token_items(), steps={steps}, batch_size=4, lr=1e-2, save_every=3,
                                save_dir={str(save_dir)!r}, callbacks=[Slow()], background=True)
        """))
        wait_until((save_dir / "checkpoint-000009" / checkpoint.STATE_JSON).exists, 120, "checkpoint 9 in the kernel")
    finally:
        km.shutdown_kernel(now=True)  # killed mid-run
        kc.stop_channels()
    done = [s for s, _ in checkpoint.complete_checkpoints(save_dir)]
    assert 9 <= done[-1] < steps
    km, kc = _kernel(root)
    try:
        out = _execute(kc, SETUP + textwrap.dedent(f"""
            import json, torch
            torch.set_num_threads(1)
            %load_ext lora_nb
            model, items = gpt2_lora(), token_items()
            run = %lora train model --data items --steps {steps} --batch-size 4 --lr 1e-2 --resume {save_dir} --wait
            print(json.dumps({{"state": run.state, "losses": [r["loss"] for r in run.history]}}))
        """), timeout=300)
    finally:
        km.shutdown_kernel(now=True)
        kc.stop_channels()
    resumed = json.loads(out.strip().splitlines()[-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = lora_nb.train(gpt2_lora(), token_items(), **{**OPTIONS, "steps": steps})
    finally:
        torch.set_num_threads(threads)
    assert resumed["state"] == "finished" and len(resumed["losses"]) == steps
    assert max(abs(a - b) for a, b in zip(resumed["losses"], losses(full))) <= 1e-6


def test_rewriting_a_step_keeps_the_old_checkpoint_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    """A resumed run writes its first step's checkpoint again: the new folder is swapped in only once complete, so
    a failing swap (the kernel's exchange, or the journaled swap's second rename) leaves the old one complete."""
    from lora_nb.core import folder_swap
    from lora_nb.errors import FileWriteError

    run = lora_nb.train(mlp_with_lora(), PAIRS, save_every=2, save_dir=tmp_path, **{**MLP, "steps": 2})
    folder = tmp_path / "checkpoint-000002"
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    real = os.rename

    def fail_exchange(src, dst):
        raise OSError(5, "Input/output error")

    def fail_into_place(src, dst):
        if Path(dst) == folder and ".lora_nb-staging-" in str(src):
            raise OSError(5, "Input/output error")
        return real(src, dst)

    for exchange, rename in ((fail_exchange, real), (None, fail_into_place)):
        monkeypatch.setattr(folder_swap, "EXCHANGE", exchange)
        monkeypatch.setattr(os, "rename", rename)
        with pytest.raises(FileWriteError, match="Input/output.*previous folder there is intact"):
            checkpoint.write_checkpoint(run.model, "default", folder, {}, {"step": 2})
        monkeypatch.setattr(os, "rename", real)
        after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert after == before and [p.name for p in tmp_path.iterdir()] == [folder.name]
