"""benchmarks/vs_trl.py measures both trainers the same way: checked end to end on a tiny Llama (TRL installed)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from helpers import chat_tokenizer, tiny_llama

pytest.importorskip("trl", reason="the TRL comparison needs the bench extra (pip install -e .[bench])")
pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("vs_trl", Path(__file__).parents[1] / "benchmarks" / "vs_trl.py")
vs_trl = importlib.util.module_from_spec(spec)
sys.modules["vs_trl"] = vs_trl
spec.loader.exec_module(vs_trl)


def chats(n, seed):
    g = torch.Generator().manual_seed(seed)
    words = lambda k: " ".join(f"w{int(i)}" for i in torch.randint(0, 90, (k,), generator=g))
    return [[{"role": "user", "content": words(int(torch.randint(2, 30, (), generator=g)))},
             {"role": "assistant", "content": words(2)}] for _ in range(n)]


@pytest.mark.parametrize("which", ["lora_nb", "trl"])
def test_each_trainer_reports_every_figure_from_a_real_run(which):
    tok = chat_tokenizer()
    opts = argparse.Namespace(steps=4, lr=1e-3, batch_size=4, max_length=64, seed=0, trl_best=False,
                              split_by_length=True, group_by_length=False)
    torch.manual_seed(0)
    model = tiny_llama().to(torch.float32)
    run = vs_trl.run_lora_nb if which == "lora_nb" else vs_trl.run_trl
    result, trained = run(model, tok, chats(24, 0), opts, "cpu")
    assert result["steps"] == 4
    assert 0 < result["first_step_s"] and 0 < result["median_step_s"] and result["real_tokens_per_s"] > 0
    assert result["peak_rss_mb"] > 0
    held = vs_trl.held_out_loss(trained, tok, chats(8, 1), "cpu")
    assert 2.0 < held < 8.0  # near ln(101) ≈ 4.6 for a tiny random model, finite either way
