"""Attach → off → on → detach on every model family lora_nb supports (G4–G9)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from helpers import (
    TinyCNN,
    TinyEmbedder,
    make_b_nonzero,
    minilm_dir,
    run,
    sample_inputs,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    tiny_mlp,
    tiny_t5,
)
from peft.tuners.lora import LoraLayer
from torch import nn

import lora_nb
from lora_nb.errors import AdapterError, NotAModelError, OptionError, TargetError

FAMILIES = {
    "gpt2": (tiny_gpt2, "auto", 8),  # Conv1D: c_attn, c_proj, c_fc, mlp.c_proj per block; lm_head excluded
    "llama": (tiny_llama, "auto", 14),
    "bert": (tiny_bert, "auto", 13),  # 6 linear per layer + pooler; classifier head excluded
    "t5": (tiny_t5, "q,v", 12),
    "mlp": (tiny_mlp, "auto", 3),
    "cnn": (TinyCNN, "auto", 3),
    "embedding": (TinyEmbedder, "emb", 1),
}


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def lora_layers(model):
    return [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def assert_same_state(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attach_off_on_detach_round_trip(family):
    build, targets, expected_layers = FAMILIES[family]
    model = build()
    x = sample_inputs(model)
    base_out = run(model, x)
    before = state(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    session = lora_nb.attach(model, r=4, targets=targets)
    assert session.model is model  # in place: the user's variable is the adapted model
    assert len(lora_layers(model)) == expected_layers
    assert torch.equal(run(model, x), base_out)  # G8: fresh adapter is a no-op

    make_b_nonzero(model)
    adapted = run(model, x)
    assert not torch.allclose(adapted, base_out)
    lora_nb.disable(model)
    assert torch.equal(run(model, x), base_out)  # off: bit-identical to the base
    lora_nb.enable(model)
    assert torch.equal(run(model, x), adapted)

    lora_nb.detach(model)  # G9
    assert lora_layers(model) == []
    assert_same_state(model, before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert not hasattr(model, "peft_config")
    assert torch.equal(run(model, x), base_out)


def test_auto_targets_skip_task_heads():
    gpt = tiny_gpt2()
    lora_nb.attach(gpt)
    assert not any(n.startswith("lm_head") for n in lora_layers(gpt))
    bert = tiny_bert()
    lora_nb.attach(bert)
    assert "classifier" not in lora_layers(bert)
    assert "bert.encoder.layer.0.attention.self.query" in lora_layers(bert)


def test_regex_targets_and_status():
    model = tiny_llama()
    lora_nb.attach(model, r=2, targets=r"layers\.0\..*(q|v)_proj")
    assert lora_layers(model) == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"]
    st = lora_nb.status(model)
    assert st.targets == lora_layers(model)
    assert st.adapters[0].name == "default" and st.adapters[0].active and st.adapters[0].enabled is True
    expected = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert st.trainable_params == expected == st.adapters[0].params
    assert "<table>" in st._repr_html_() and "default *" in str(st)


def test_real_minilm_query_value():
    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm_dir()).eval()
    before = state(model)
    x = {"input_ids": torch.tensor([[101, 7592, 2088, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    base = model(**x).last_hidden_state.detach()
    lora_nb.attach(model, r=4, targets="query,value")
    assert len(lora_layers(model)) == 12
    assert lora_nb.status(model).trainable_params == 36_864
    make_b_nonzero(model)
    with torch.no_grad():
        assert not torch.allclose(model(**x).last_hidden_state, base)
        lora_nb.disable(model)
        assert torch.equal(model(**x).last_hidden_state, base)
    lora_nb.detach(model)
    assert_same_state(model, before)


# --- bad inputs change nothing (G2–G6) ---------------------------------------------------------


@pytest.mark.parametrize("obj", [[1, 2], torch.zeros(2), "model", None])
def test_not_a_module(obj):  # G2
    with pytest.raises(NotAModelError, match=type(obj).__name__):
        lora_nb.attach(obj)


@pytest.mark.parametrize("options", [{"r": 0}, {"r": "x"}, {"r": 2.5}, {"alpha": -1}, {"dropout": 1.5},
                                     {"init": "banana"}, {"name": "no spaces"}])
def test_bad_options_attach_nothing(options):  # G3
    model = tiny_mlp()
    before = state(model)
    with pytest.raises(OptionError):
        lora_nb.attach(model, **options)
    assert lora_layers(model) == [] and lora_nb.core.find(model) is None
    assert_same_state(model, before)


def test_targets_matching_nothing_list_candidates():  # G4
    model = tiny_llama()
    before = state(model)
    with pytest.raises(TargetError, match=r"q_prj.*did you mean `q_proj`.*candidates"):
        lora_nb.attach(model, targets="q_prj")
    with pytest.raises(TargetError, match="matches no adaptable layer"):
        lora_nb.attach(model, targets=r"nothing\d+")
    assert lora_layers(model) == []
    assert_same_state(model, before)


class WithGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gru = nn.GRU(4, 4)
        self.cross = nn.MultiheadAttention(4, 1, kdim=3, vdim=3)  # separate q/k/v weights: peft cannot


@pytest.mark.parametrize("targets", ["fc,gru", "fc,cross"])
def test_unsupported_target_refused_before_injecting(targets):  # G5
    model = WithGRU()
    before = state(model)
    with pytest.raises(TargetError, match="cannot adapt"):
        lora_nb.attach(model, targets=targets)
    assert lora_layers(model) == []  # `fc` (matched first) was not wrapped
    assert_same_state(model, before)


def test_attach_twice_same_name():  # G6
    model = tiny_mlp()
    lora_nb.attach(model, r=2)
    with pytest.raises(AdapterError, match="already exists"):
        lora_nb.attach(model, r=2)
    lora_nb.attach(model, r=3, replace=True)
    assert len(lora_layers(model)) == 3  # no nested wrappers
    assert not any(isinstance(m.get_base_layer(), LoraLayer) for m in model.modules() if isinstance(m, LoraLayer))
    assert lora_nb.status(model).adapters[0].r == 3


def test_rank_above_layer_size_warns():  # G7
    model = nn.Sequential(nn.Linear(20, 2))
    with pytest.warns(UserWarning, match="exceeds min"):
        lora_nb.attach(model, r=8)
    assert len(lora_layers(model)) == 1


def test_second_adapter_and_switching():
    model = tiny_mlp()
    x = sample_inputs(model)
    lora_nb.attach(model, r=2, name="first")
    make_b_nonzero(model, "first")
    out_a = run(model, x)
    lora_nb.attach(model, r=4, name="second", targets="0")
    assert lora_nb.core.find(model).active == "second"
    lora_nb.enable(model, "first")
    assert torch.equal(run(model, x), out_a)
    with pytest.raises(AdapterError, match="did you mean `first`"):
        lora_nb.enable(model, "firts")
    lora_nb.delete(model, "second")
    assert lora_nb.core.find(model).adapters == ["first"]


def test_commands_on_model_without_adapter():
    with pytest.raises(AdapterError, match="attach one first"):
        lora_nb.status(tiny_mlp())


def test_bf16_base_keeps_fp32_adapter():  # G20 (attach part)
    model = tiny_mlp().to(torch.bfloat16)
    lora_nb.attach(model, r=2)
    dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert dtypes == {torch.float32}
    x = sample_inputs(model).to(torch.bfloat16)
    base = run(model, x)
    make_b_nonzero(model)
    lora_nb.disable(model)
    assert torch.equal(run(model, x), base)


def test_core_imports_no_notebook_stack():
    code = "import sys, lora_nb.core; bad=[m for m in ('IPython','ipywidgets','plotly') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_lora_nb_is_light():
    code = "import sys, lora_nb; print(sorted(m for m in ('IPython','ipywidgets','plotly','peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_network_is_blocked():  # G24: the suite runs with sockets closed
    import socket

    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_no_warnings_on_plain_attach():
    model = tiny_mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lora_nb.attach(model, r=2)


def test_modules_to_save_trains_a_new_head_and_detaches_cleanly():
    model = tiny_bert()
    x = sample_inputs(model)
    base = run(model, x)
    before = state(model)
    lora_nb.attach(model, r=2, targets="query,value", modules_to_save="classifier")
    st = lora_nb.status(model)
    head = sum(p.numel() for p in model.classifier.parameters()) // 2  # wrapper holds original + trainable copy
    assert st.adapters[0].params == st.trainable_params == 2 * 2 * (2 * 32 * 2) + head
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "modules_to_save" in n:
                p.add_(1.0)
    assert not torch.allclose(run(model, x), base)
    lora_nb.disable(model)
    assert torch.equal(run(model, x), base)
    lora_nb.detach(model)
    assert_same_state(model, before)
    with pytest.raises(TargetError, match="did you mean `classifier`"):
        lora_nb.attach(model, modules_to_save="clasifier")
    assert lora_layers(model) == []


def test_deleting_an_adapted_model_frees_it():
    import copy
    import gc
    import pickle
    import weakref

    model = tiny_mlp()
    lora_nb.attach(model, r=2)
    clone = copy.deepcopy(model)  # a copy carries the LoRA layers but no lora_nb session
    assert lora_nb.core.find(clone) is None and len(lora_layers(clone)) == 3
    assert lora_nb.core.find(pickle.loads(pickle.dumps(model))) is None
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
