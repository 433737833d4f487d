"""`%lora export`: a notebook run as a folder that `accelerate launch train.py` continues, reproducing its curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import forks_cpu_workers, tiny_gpt2, tiny_mlp
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lora_nb
from lora_nb.core.export.api import export
from lora_nb.errors import AdapterError, OptionError

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    from lora_nb.core.training.processes.driver import _free_port

    return _free_port()


def token_data(n=64):
    """Token sequences that repeat a short motif, as dicts (model(**batch).loss)."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        motif = torch.randint(1, 30, (3,), generator=g)
        ids = motif.repeat(4)
        out.append({"input_ids": ids, "labels": ids})
    return out


@forks_cpu_workers
def test_exported_script_continues_the_run_under_accelerate_launch(tmp_path):
    torch.manual_seed(0)
    model = tiny_gpt2()
    lora_nb.attach(model, r=4)
    data = token_data()
    first = lora_nb.train(model, data, steps=8, lr=2e-2, batch_size=4, device="cpu")
    assert first.state == "finished"
    result = export(model, tmp_path / "job", data=data)
    assert result.notes == [] and {"train.py", "adapter", "base", "data"} <= set(result.files)
    # the notebook goes on with the same settings on 2 processes; the script does the same from the same adapter
    notebook = lora_nb.train(model, data, steps=8, lr=2e-2, batch_size=4, device="cpu", processes=2)
    assert notebook.state == "finished", notebook.message
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # accelerate 1.15 starts ONE process for `--num_processes 2 --cpu` (multi-CPU needs mpirun); `--multi_gpu`
    # goes through torchrun, and on a machine without GPUs the script's Accelerator(cpu=True) runs 2 over gloo
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(free_port()), "train.py"],
                          cwd=tmp_path / "job", env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 8/8" in done.stdout
    script = json.loads((tmp_path / "job" / "output" / "history.json").read_text())
    assert script["state"] == "finished" and all(r["processes"] == 2 for r in script["history"])
    ours, theirs = [r["loss"] for r in notebook.history], [r["loss"] for r in script["history"]]
    # same loop, data order, seeds and reduction: measured equal to 5 decimals; 1e-4 relative leaves room for
    # a different BLAS thread count on another machine, far below the step-to-step change of the loss (~1e-2)
    assert len(theirs) == 8 and max(abs(a - b) / abs(a) for a, b in zip(ours, theirs)) < 1e-4
    assert max(theirs) - min(theirs) > 1e-3  # a moving curve, so matching it step by step means something
    # what the script trained is a PEFT adapter peft (and lora_nb) can load
    twin = tiny_gpt2()
    assert (tmp_path / "job" / "output" / "adapter" / "lora_nb_manifest.json").is_file()  # saved by lora_nb: checked
    lora_nb.load(twin, tmp_path / "job" / "output" / "adapter")
    mine = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert max((p - mine[n]).abs().max().item() for n, p in twin.named_parameters() if n in mine) < 1e-4


def test_the_base_is_saved_without_lora_and_reloads_bit_identically(tmp_path):
    model = tiny_gpt2()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora_nb.attach(model, r=4)
    export(model, tmp_path / "job", data=token_data(8))
    again = type(model).from_pretrained(tmp_path / "job" / "base")
    assert set(again.state_dict()) == set(base)
    assert all(torch.equal(again.state_dict()[k], base[k]) for k in base)
    script = (tmp_path / "job" / "train.py").read_text()
    assert '"kind": "transformers"' in script and '"class": "GPT2LMHeadModel"' in script
    compile(script, "train.py", "exec")


class Custom(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(16), 0


def test_plain_modules_data_forms_and_what_cannot_be_exported(tmp_path):
    model = tiny_mlp()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    lora_nb.attach(model, r=2)
    x, y = torch.randn(32, 16), torch.randint(0, 5, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True)
    result = export(model, tmp_path / "a", data=loader, eval_data=Custom(), loss_fn=nn.CrossEntropyLoss())
    plain = torch.load(tmp_path / "a" / "base" / "model.pt", weights_only=False)
    assert not any("lora" in k for k in plain.state_dict())
    assert all(torch.equal(plain.state_dict()[k], base[k]) for k in base)
    saved = torch.load(tmp_path / "a" / "data" / "train.pt", weights_only=True)
    assert torch.equal(saved[0], x) and torch.equal(saved[1], y)
    script = (tmp_path / "a" / "train.py").read_text()
    assert '"batch_size": 6' in script and '"torch.nn": "CrossEntropyLoss"' in script
    assert result.notes == ["the eval data was not exported (a Custom, which lora_nb cannot save): "
                            "write load_data() in train.py"]
    result = export(model, tmp_path / "b", data=[(torch.zeros(16), 1)], loss_fn=lambda out, target: out.sum())
    assert result.notes == ["the loss_fn was not exported (`<lambda>` is code, not data): define it in "
                            "load_loss() in train.py"]
    assert "continue with: cd" in repr(result)


def test_refusals_change_nothing(tmp_path):
    model = tiny_mlp()
    lora_nb.attach(model, r=2)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(lora_nb.errors.PathError, match="is not an export folder"):
        export(model, tmp_path / "taken")
    lora_nb.merge(model)
    with pytest.raises(AdapterError, match="unmerge it before exporting"):
        export(model, tmp_path / "merged")
    lora_nb.unmerge(model)

    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

    Local.__module__ = "__main__"  # as if defined in a notebook cell
    local = Local()
    lora_nb.attach(local, r=2, targets="lin")
    with pytest.raises(OptionError, match=r"classes defined in the notebook \(Local\)"):
        export(local, tmp_path / "local")
    assert not (tmp_path / "merged").exists() and not (tmp_path / "local").exists()


def test_the_magic_exports_what_the_last_train_used(ip, tmp_path):
    ip.user_ns.update(model=tiny_mlp(), pairs=[(torch.randn(16), i % 5) for i in range(20)])
    ip.run_line_magic("lora", "attach model --r 2")
    ip.run_line_magic("lora", "train model --data pairs --steps 2 --lr 0.05 --wait")
    result = ip.run_line_magic("lora", f"export model {tmp_path / 'job'}")
    assert result.notes == [] and (tmp_path / "job" / "data" / "train.pt").exists()
    assert '"lr": 0.05' in (tmp_path / "job" / "train.py").read_text()
