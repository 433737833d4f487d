"""Answer-only losses compute the LM head only where labels count: the same loss and gradients, fewer logits."""

from __future__ import annotations

import pytest
import torch
from helpers import chat_tokenizer, tiny_gpt2, tiny_llama

import lora_nb
from lora_nb.core.training.data.batches import make_batches
from lora_nb.core.training.data.head_loss import decoder_and_head, selected_loss


def answer_batch(rows=4, width=24, answer=3):
    """Padded rows whose labels keep only the last ``answer`` tokens of each row (like chat answers)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (rows, width), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    for r in range(rows):
        end = width - 3 * r  # ragged: right padding
        mask[r, end:] = 0
        ids[r, end:] = 0
        labels[r, end - answer:end] = ids[r, end - answer:end]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def adapted(build, targets="auto"):
    torch.manual_seed(0)
    model = build()
    lora_nb.attach(model, r=4, targets=targets)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a non-zero update, so the adapter shapes the loss
    return model.train()


def loss_and_grads(model, compute):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks in both
    loss = compute()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("build, targets", [(tiny_gpt2, "auto"), (tiny_llama, "auto"),
                                            (tiny_llama, ["q_proj", "v_proj", "lm_head"])])
def test_the_selected_loss_and_its_gradients_equal_the_full_forward(build, targets):
    model, batch = adapted(build, targets), answer_batch()
    heads = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: heads.append(tuple(out.shape)))
    full, full_grads = loss_and_grads(model, lambda: model(**batch).loss)
    selected, grads = loss_and_grads(model, lambda: selected_loss(model, batch))
    assert heads == [(4, 24, 101), (12, 101)]  # the head ran on 4 answers × 3 tokens, not 96 positions
    assert torch.allclose(selected, full, atol=1e-6, rtol=0)
    assert grads.keys() == full_grads.keys() and len(grads) > 0
    for name, g in grads.items():
        assert torch.allclose(g, full_grads[name], atol=1e-6, rtol=1e-5), name


def test_chat_training_uses_it_and_learns_what_the_full_loss_would():
    tok = chat_tokenizer()
    chats = [[{"role": "user", "content": " ".join(f"w{(i * 7 + k) % 90}" for k in range(12))},
              {"role": "assistant", "content": f"w{i % 5}"}] for i in range(16)]
    batch = next(iter(make_batches(chats, tokenizer=tok, batch_size=16, shuffle=False).loader))
    model = adapted(tiny_llama)
    assert torch.allclose(selected_loss(model, batch), model(**batch).loss, atol=1e-6)
    run = lora_nb.train(model, chats, tokenizer=tok, steps=6, lr=1e-2, batch_size=8, background=False)
    assert run.state == "finished" and run.history[-1]["loss"] < run.history[0]["loss"]


def test_where_it_cannot_be_exact_the_models_own_forward_is_used():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    batch = answer_batch()
    gemma = Gemma2ForCausalLM(Gemma2Config(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                           vocab_size=101, final_logit_softcapping=30.0))
    assert decoder_and_head(gemma) is None  # soft-capped logits (and an architecture not known to be plain)
    llama = adapted(tiny_llama)
    llama.config.logit_scale = 0.5
    assert decoder_and_head(llama) is None
    del llama.config.logit_scale
    assert decoder_and_head(llama) is not None
    llama.forward = llama.forward  # a forward replaced on the instance (hooks, dispatch)
    assert decoder_and_head(llama) is None
    model = adapted(tiny_gpt2)
    assert selected_loss(model, {**batch, "position_ids": torch.arange(24).expand(4, 24)}) is None  # other inputs
    ids = batch["input_ids"]
    everywhere = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    assert selected_loss(model, everywhere) is None  # (nearly) every position counts: nothing to save
    assert selected_loss(torch.nn.Linear(3, 3), batch) is None
