"""A causal LM's loss with the LM head applied only where the labels carry loss.

With answer-only labels (chat data) most positions are -100, yet ``model(**batch)`` computes the
head's logits (tokens × vocabulary) at every position. Here the decoder runs once, its hidden
states at the positions whose next-token label counts are selected, and the head and the
cross-entropy run on those rows only: the same mean cross-entropy over the same positions as the
model's own ``ForCausalLMLoss`` (shift by one, ignore -100), gradients included.

Only where that equality is known to hold: a transformers ``…ForCausalLM`` / ``…LMHeadModel`` of an
architecture whose forward is ``head(decoder(…).last_hidden_state)`` then the standard loss
(``SAFE_TYPES``), no logit soft-capping or scaling in its config, no replaced ``forward`` or loss,
an output embedding that is a linear layer (tied, LoRA-adapted or not), and a batch of only
``input_ids``, ``attention_mask`` and ``labels``. Anything else returns ``None`` and the caller uses
the model's own forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .chat import IGNORE

# model types whose …ForCausalLM forward is lm_head(base(...).last_hidden_state) and ForCausalLMLoss (transformers 5)
SAFE_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "phi3"})
KEYS = frozenset({"input_ids", "attention_mask", "labels"})
SCALINGS = ("final_logit_softcapping", "logit_scale", "logits_scaling")  # Gemma 2, Cohere, Granite
SELECT_BELOW = 0.9  # select when fewer than this share of the positions carry loss


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """The decoder and LM head of a causal LM whose loss can be computed on selected rows, else None."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return None
    config = model.config
    if getattr(config, "model_type", None) not in SAFE_TYPES or any(
            getattr(config, name, None) not in (None, 1, 1.0) for name in SCALINGS):
        return None
    if "forward" in vars(model) or "_loss_function" in vars(model) or getattr(model, "loss_type", None) not in (
            None, "ForCausalLM") or type(model).loss_function is not PreTrainedModel.loss_function:
        return None
    decoder = getattr(model, model.base_model_prefix, None)
    head = model.get_output_embeddings()
    base = head.get_base_layer() if hasattr(head, "get_base_layer") else head  # a LoRA-adapted head
    if not isinstance(decoder, nn.Module) or not isinstance(base, nn.Linear) or "forward" in vars(decoder):
        return None
    return decoder, head


def selected_loss(model: nn.Module, batch: Any) -> torch.Tensor | None:
    """The model's causal-LM loss on ``batch``, with logits only where the labels count; None: use the forward."""
    if not isinstance(batch, Mapping) or set(batch) - KEYS or not {"input_ids", "labels"} <= set(batch):
        return None
    labels = batch["labels"]
    if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.shape != batch["input_ids"].shape:
        return None
    targets = labels[:, 1:]
    keep = targets != IGNORE
    if int(keep.sum()) >= SELECT_BELOW * labels.numel():
        return None
    parts = decoder_and_head(model)
    if parts is None:
        return None
    decoder, head = parts
    out = decoder(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False)
    hidden = out.last_hidden_state[:, :-1][keep]
    return F.cross_entropy(head(hidden).float(), targets[keep])
