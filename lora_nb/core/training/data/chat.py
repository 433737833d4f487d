"""Chat data for causal LMs: conversations and prompt/completion pairs, with the loss on the answers only.

- A conversation is a list of ``{"role", "content"}`` messages (or a dict with a ``messages`` list). It is rendered
  with the tokenizer's chat template and tokenized as one text, exactly as ``apply_chat_template`` would; the labels
  keep the tokens of each assistant turn (its content and the template's end-of-turn text) and set every other
  token, the prompt and the padding, to -100.
- A prompt/completion pair is a dict with ``prompt`` and ``completion``. With a chat template it becomes a user turn
  and an assistant turn (loss on the assistant turn); without one the two texts are concatenated: the prompt
  tokenized as usual, the completion without special tokens, then the end-of-sequence token, and the loss covers
  the completion and that final token. A pair whose prompt and completion are lists of messages is a conversation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ....errors import DataError

IGNORE = -100  # label of a token that takes no part in the loss


def is_conversation(item: Any) -> bool:
    """A list of messages, each a mapping with ``role`` and ``content``."""
    return (isinstance(item, Sequence) and not isinstance(item, str) and len(item) > 0
            and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in item))


def is_chat_item(item: Any) -> bool:
    """One item of chat data: a conversation, a dict with ``messages``, or a ``prompt``/``completion`` dict."""
    if isinstance(item, Mapping):
        return "messages" in item or ("prompt" in item and "completion" in item)
    return is_conversation(item)


def messages_of(item: Any, index: int, has_template: bool) -> list[Mapping] | None:
    """The messages of a chat item, or ``None`` for a plain-text prompt/completion pair (no chat template)."""
    if isinstance(item, Mapping) and "messages" in item:
        item = item["messages"]
    elif isinstance(item, Mapping):
        prompt, completion = item["prompt"], item["completion"]
        if is_conversation(prompt) and is_conversation(completion):
            item = [*prompt, *completion]
        elif not (isinstance(prompt, str) and isinstance(completion, str)):
            raise DataError(f"item {index}: prompt and completion must both be texts or both lists of messages")
        elif not has_template:
            return None
        else:
            item = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    if not is_conversation(item):
        raise DataError(f"item {index} is not a conversation: give a list of {{'role', 'content'}} messages")
    if not any(m["role"] == "assistant" for m in item):
        raise DataError(f"conversation {index} has no assistant turn, so nothing in it would be learned")
    return list(item)


def assistant_spans(tokenizer: Any, messages: list[Mapping]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    A turn's span runs from the end of the conversation so far rendered with the generation prompt to the end of
    the conversation rendered up to and including that turn.
    """
    text = render(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:i], generation_prompt=True)
        through = render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise DataError("the tokenizer's chat template renders a conversation differently from its turns "
                            "one by one, so assistant tokens cannot be told apart; pass tokenized data instead")
        spans.append((len(before), len(through)))
    return text, spans


def render(tokenizer: Any, messages: list[Mapping], generation_prompt: bool) -> str:
    """``messages`` as the chat template writes them (text, not tokens)."""
    try:
        return tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                             add_generation_prompt=generation_prompt)
    except Exception as exc:  # a template that rejects these messages (e.g. roles out of order)
        raise DataError(f"the chat template failed: {type(exc).__name__}: {exc}") from None


def tokenize_spans(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` (no extra special tokens: the template wrote them) and labels: ids inside ``spans``."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoded["input_ids"])
        inside = [any(a <= start < b for a, b in spans) for start, _ in encoded["offset_mapping"]]
        return ids, [t if keep else IGNORE for t, keep in zip(ids, inside)]
    ids, labels, cut = [], [], 0  # a slow tokenizer: tokenize piece by piece at the span boundaries
    for a, b in spans:
        for piece, learn in ((text[cut:a], False), (text[a:b], True)):
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            ids += piece_ids
            labels += piece_ids if learn else [IGNORE] * len(piece_ids)
        cut = b
    tail = tokenizer(text[cut:], add_special_tokens=False)["input_ids"] if text[cut:] else []
    return ids + tail, labels + [IGNORE] * len(tail)


def tokenize_plain_pair(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Prompt then completion then end-of-sequence, labels on the completion and the end-of-sequence token."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    answer = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        answer.append(int(tokenizer.eos_token_id))
    return prompt_ids + answer, [IGNORE] * len(prompt_ids) + answer


def has_chat_template(tokenizer: Any) -> bool:
    """Does ``tokenizer`` carry a chat template?"""
    return bool(getattr(tokenizer, "chat_template", None))


def pad_token_id(tokenizer: Any) -> int:
    """The id used to pad: the tokenizer's pad token, else its end-of-sequence token, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) is not None:
            return int(getattr(tokenizer, name))
    return 0


def pad(sequences: list[list[int]], labels: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """A right-padded batch: ``input_ids``, ``attention_mask`` (0 on padding), ``labels`` (-100 on padding)."""
    width = max(1, max(map(len, sequences)))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    targets = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    for row, (seq, lab) in enumerate(zip(sequences, labels)):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        targets[row, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": targets}


def tokenize_item(item: Any, index: int, tokenizer: Any, template: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 outside the answers) of one chat item, untruncated."""
    if not is_chat_item(item):
        raise DataError(f"item {index} is not chat data like item 0 (a conversation or a prompt/completion dict)")
    messages = messages_of(item, index, template)
    if messages is None:
        return tokenize_plain_pair(tokenizer, item["prompt"], item["completion"])
    if not template:
        raise DataError("conversations need a tokenizer with a chat template (its chat_template is empty): "
                        "set tokenizer.chat_template, or give prompt/completion pairs")
    return tokenize_spans(tokenizer, *assistant_spans(tokenizer, messages))


class ChatExamples(Dataset):
    """Chat items tokenized once into (ids, labels); items with no answer token left after truncation are dropped."""

    def __init__(self, items: Sequence[Any], tokenizer: Any, max_length: int) -> None:
        if tokenizer is None:
            raise DataError("chat data needs its tokenizer: pass `tokenizer=…`")
        template = has_chat_template(tokenizer)
        self.examples: list[tuple[list[int], list[int]]] = []
        self.dropped = 0
        self.form = "conversations" if not isinstance(items[0], Mapping) or "messages" in items[0] else "pairs"
        for i, item in enumerate(items):
            ids, labels = tokenize_item(item, i, tokenizer, template)
            ids, labels = ids[:max_length], labels[:max_length]
            if all(t == IGNORE for t in labels):
                self.dropped += 1
                continue
            self.examples.append((ids, labels))
        if not self.examples:
            raise DataError(f"no chat item keeps an answer token within max_length={max_length}: nothing to learn "
                            "(`%lora data --data VAR --tokenizer VAR` shows the loss mask)")
        self.pad_id = pad_token_id(tokenizer)
        self.template = template

    def describe(self, max_length: int) -> str:
        """A short description: how many items, which form, how they were tokenized."""
        how = "chat template" if self.template else "prompt + completion, no chat template"
        dropped = f"; {self.dropped} dropped (no answer token within {max_length} tokens)" if self.dropped else ""
        return f"{len(self.examples)} {self.form} ({how}; loss on answers only){dropped}"

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.examples[i]

    def lengths(self) -> list[int]:
        return [len(ids) for ids, _ in self.examples]

    def collate(self, items: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        return pad([ids for ids, _ in items], [labels for _, labels in items], self.pad_id)
