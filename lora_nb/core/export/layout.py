"""How a transformers model's tensors sit in a GGUF file: names, hyper-parameters and the row layout llama.cpp wants.

Rules follow llama.cpp's ``convert_hf_to_gguf.py`` (ggml-org/llama.cpp, master of 2026; ``LlamaModel`` and
``GPT2Model``): tensor names come from gguf's own ``TensorNameMap``; Llama's q and k projections (weights and
biases) are permuted from Hugging Face's rotate-half rotary layout to GGML's interleaved one,
``W.reshape(n, 2, rows // n // 2, …).swapaxes(1, 2)`` with n = the head count for q and the KV-head count for k;
GPT-2's ``Conv1D`` weights are stored transposed (``in × out``) and are written ``out × in``. A GGUF LoRA permutes
only B's rows the same way (``convert_lora_to_gguf.py``), since (P·B)·A = P·(B·A).

GPT-2 and transformers' GGUF loader (``integrations/ggml.py``, transformers 5.x): it maps ``gpt2.context_length`` to
``n_ctx``, which ``GPT2Config`` does not read, and ``gpt2.feed_forward_length`` to an attribute nothing reads, so it
builds every GGUF GPT-2 with 1024 positions and a feed-forward width of 4 · n_embd. A GPT-2 with fewer positions is
written with its position embeddings padded with zero rows to 1024 (``context_length`` 1024, so llama.cpp, which
reads the rows from ``context_length``, loads it too; the export says which positions were never trained); more
than 1024 positions, or another feed-forward width, is refused before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...errors import OptionError

_GPT2_TRANSPOSED = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
ARCHES = ("llama", "gpt2")  # model_type values written here
GPT2_POSITIONS = 1024  # the positions transformers' GGUF loader gives every GPT-2
_GPT2_POSITION_KEY = "transformer.wpe.weight"


def permute_rows(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Rotate-half → interleaved rotary layout over ``t``'s rows (``heads`` groups)."""
    return t.reshape(heads, 2, t.shape[0] // heads // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    params = getattr(config, "rope_parameters", None) or {}
    return float(theta if theta is not None else params.get("rope_theta", 10000.0))


def _check_gpt2(config: Any) -> None:
    fix = "export `merged` and convert that folder with llama.cpp's convert_hf_to_gguf.py"
    if config.n_positions > GPT2_POSITIONS:
        raise OptionError(f"this GPT-2 has {config.n_positions} positions; transformers reads a GGUF GPT-2 as "
                          f"{GPT2_POSITIONS}, so the file would not load back: {fix}")
    if config.n_inner not in (None, 4 * config.n_embd):
        raise OptionError(f"this GPT-2's feed-forward width is {config.n_inner}; transformers reads a GGUF GPT-2's "
                          f"as 4 × n_embd = {4 * config.n_embd}, so the file would not load back: {fix}")


def _check_rope(config: Any) -> None:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in ("default", None):
        raise OptionError(f"rope scaling `{kind}` is not written by lora_nb's GGUF export; export `merged` and "
                          "convert with llama.cpp's convert_hf_to_gguf.py")


@dataclass
class Layout:
    """One model's GGUF description: architecture, name map and the row/transposition rules."""

    arch: str
    config: Any
    permute: bool = True  # False only in tests that prove the permutation matters

    def __post_init__(self) -> None:
        import gguf

        kind = {"llama": gguf.MODEL_ARCH.LLAMA, "gpt2": gguf.MODEL_ARCH.GPT2}[self.arch]
        self.names = gguf.get_tensor_name_map(kind, self.config.num_hidden_layers)

    @classmethod
    def of(cls, model: Any, permute: bool = True) -> Layout:
        config = getattr(model, "config", None)
        kind = getattr(config, "model_type", None)
        if kind not in ARCHES:
            raise OptionError(f"GGUF export knows {' and '.join(ARCHES)} models, not "
                              f"`{kind or type(model).__name__}`; export `merged` and convert that folder with "
                              "llama.cpp's convert_hf_to_gguf.py")
        (_check_rope if kind == "llama" else _check_gpt2)(config)
        return cls(kind, config, permute)

    def notes(self) -> list[str]:
        """What the file holds differently from the model, for the export's report."""
        positions = getattr(self.config, "n_positions", GPT2_POSITIONS)
        if self.arch != "gpt2" or positions == GPT2_POSITIONS:
            return []
        return [f"the model's {positions} position embeddings are padded with zero rows to {GPT2_POSITIONS} (what "
                f"transformers' GGUF loader and the file's context length expect): positions from {positions} on "
                "were never trained, keep inputs shorter"]

    def gguf_name(self, key: str) -> str | None:
        """The GGUF tensor name of state-dict ``key`` (None: not part of the file, e.g. a tied lm_head)."""
        stem, _, suffix = key.rpartition(".")
        if key == "lm_head.weight" and getattr(self.config, "tie_word_embeddings", False) and self.arch == "llama":
            return None
        name = self.names.get_name(stem)
        return None if name is None else f"{name}.{suffix}"

    def _heads(self, key: str) -> int | None:
        if self.arch != "llama" or not self.permute:
            return None
        if key.endswith(("q_proj.weight", "q_proj.bias")):
            return self.config.num_attention_heads
        if key.endswith(("k_proj.weight", "k_proj.bias")):
            return self.config.num_key_value_heads or self.config.num_attention_heads
        return None

    def to_file(self, key: str, t: torch.Tensor) -> torch.Tensor:
        """Tensor ``key`` (stored layout) as the GGUF file holds it."""
        heads = self._heads(key)
        if heads is not None:
            return permute_rows(t, heads)
        if self.arch == "gpt2" and key.endswith(_GPT2_TRANSPOSED):
            return t.T
        if self.arch == "gpt2" and key == _GPT2_POSITION_KEY and t.shape[0] < GPT2_POSITIONS:
            return torch.cat([t, t.new_zeros(GPT2_POSITIONS - t.shape[0], *t.shape[1:])])
        return t

    def lora_b(self, key: str, b: torch.Tensor) -> torch.Tensor:
        """LoRA factor B (out × r) of the module whose weight is ``key``, rows as the file holds them."""
        heads = self._heads(key)
        return b if heads is None else permute_rows(b, heads)

    def write_hparams(self, writer: Any) -> None:
        c = self.config
        if self.arch == "gpt2":
            writer.add_context_length(GPT2_POSITIONS)  # the rows written (see ``to_file``)
            writer.add_embedding_length(c.n_embd)
            writer.add_feed_forward_length(c.n_inner or 4 * c.n_embd)
            writer.add_block_count(c.n_layer)
            writer.add_head_count(c.n_head)
            writer.add_layer_norm_eps(c.layer_norm_epsilon)
            return
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        writer.add_vocab_size(c.vocab_size)
        writer.add_context_length(c.max_position_embeddings)
        writer.add_embedding_length(c.hidden_size)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_block_count(c.num_hidden_layers)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads or c.num_attention_heads)
        writer.add_rope_freq_base(_rope_theta(c))
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_rope_dimension_count(head_dim)
