"""A Hugging Face tokenizer as GGUF ``tokenizer.ggml.*`` metadata, and an Ollama ``Modelfile`` beside the file.

Follows llama.cpp's ``convert_hf_to_gguf.py`` (``get_vocab_base`` / `_set_vocab_gpt2` and gguf's
``SpecialVocab``): byte-level BPE vocabularies as ``tokenizer.ggml.model = gpt2`` with their merges; ids the
tokenizer lacks up to the model's vocabulary size become ``[PAD<i>]`` (unused); added special tokens are control
tokens. The pre-tokenizer name is read from the tokenizer's own pre-tokenizer: GPT-2's byte-level regex is
``gpt-2``; digits split one by one before it (SmolLM, StarCoder) is ``smollm``.
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import OptionError

NORMAL, UNUSED, USER_DEFINED, CONTROL = 1, 5, 4, 3  # gguf.TokenType values


def _backend(tokenizer: Any) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise OptionError(f"GGUF export needs a fast (🤗 tokenizers) tokenizer; got a {type(tokenizer).__name__}")
    spec = json.loads(backend.to_str())
    if (spec.get("model") or {}).get("type") != "BPE":
        kind = (spec.get("model") or {}).get("type")
        raise OptionError(f"GGUF export writes byte-level BPE vocabularies (GPT-2, SmolLM, Llama 3 style), not a "
                          f"{kind} tokenizer; export `merged` and convert it with llama.cpp's convert_hf_to_gguf.py")
    return spec


def check_vocabulary(tokenizer: Any) -> None:
    """Refuse a tokenizer whose vocabulary a GGUF file cannot carry (before anything is written)."""
    _backend(tokenizer)


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (``default`` when it is none of the two known ones)."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    return "default"


def _tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {i: a for i, a in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    tokens, types = [], []
    for i in range(max(vocab_size, len(by_id))):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        else:
            tokens.append(by_id[i])
            types.append((CONTROL if added[i].special else USER_DEFINED) if i in added else NORMAL)
    return tokens, types


def _merges(spec: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> list[str]:
    """Write ``tokenizer`` into ``writer``'s metadata; returns notes for the export's report."""
    spec = _backend(tokenizer)
    tokens, types = _tokens(tokenizer, vocab_size)
    pre = pre_tokenizer_name(spec)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(spec))
    for attr, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                      ("unk_token_id", writer.add_unk_token_id), ("pad_token_id", writer.add_pad_token_id)):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            add(int(value))
    ids = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
    return [] if pre != "default" else ["the tokenizer's pre-tokenizer is not one llama.cpp names here: llama.cpp "
                                        "splits text with its default regex, which may tokenize differently"]


_CHATML = ('TEMPLATE """{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
           '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
           '<|im_start|>assistant\n"""')


def modelfile(gguf_name: str, tokenizer: Any) -> str:
    """An Ollama ``Modelfile`` for ``gguf_name``: a ChatML template when the tokenizer's chat template is ChatML
    (Ollama templates are Go templates, not Jinja), and the end-of-turn tokens as stop sequences."""
    lines = [f"FROM ./{gguf_name}"]
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    stops = []
    if isinstance(template, str) and "<|im_start|>" in template:
        lines.append(_CHATML)
        stops.append("<|im_end|>")
    eos = getattr(tokenizer, "eos_token", None) if tokenizer is not None else None
    if isinstance(eos, str) and eos not in stops:
        stops.append(eos)
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"
