"""The trainer's own batches, read as its collator makes them: supervised tokens counted, the first batch checked.

``TokenCounter`` wraps the trainer's ``data_collator`` (the function is kept and called as before; its batches are
returned unchanged): it adds up the tokens whose label is not -100 (what the capacity gauge sets against the
trainable parameters) and, on the first batch, before step 1, runs lora_nb's loss-mask checks on it (trained and
masked tokens, the end-of-turn token after each answer, rows with nothing to learn) and keeps the failing ones as
one-line warnings. TRL's ``assistant_only_loss`` / ``completion_only_loss`` batches carry their mask in ``labels``
and are checked the same way. With ``dataloader_num_workers > 0`` the collator runs in other processes and nothing
is counted here.
"""

from __future__ import annotations

from typing import Any

from ..training.data.chat import IGNORE
from ..training.data.loss_mask import loss_mask


def batch_rows(batch: Any) -> list[dict]:
    """The rows of a collated batch as ``{"input_ids", "labels"}`` lists, padding (attention mask 0) left out."""
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask")
    rows = []
    for i in range(len(ids)):
        keep = [bool(m) for m in mask[i].tolist()] if mask is not None else [True] * len(ids[i])
        rows.append({"input_ids": [t for t, k in zip(ids[i].tolist(), keep) if k],
                     "labels": [t for t, k in zip(labels[i].tolist(), keep) if k]})
    return rows


class TokenCounter:
    """The trainer's collator, counting supervised tokens and checking the first batch's loss mask."""

    def __init__(self, collator: Any, tokenizer: Any) -> None:
        self.collator, self.tokenizer = collator, tokenizer
        self.supervised = 0  # tokens with a label, over every batch collated so far
        self.checked = False
        self.warnings: list[str] = []  # the first batch's failed checks, one line each
        self.report: Any = None  # the first batch's LossMaskReport

    def __call__(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        batch = self.collator(features, *args, **kwargs)
        labels = batch.get("labels") if hasattr(batch, "get") else None
        if labels is not None and hasattr(labels, "ne"):
            self.supervised += int(labels.ne(IGNORE).sum())
            if not self.checked:
                self.check(batch)
        return batch

    def check(self, batch: Any) -> None:
        """The loss-mask checks on the first batch (a check that cannot read the batch says so, never raises)."""
        self.checked = True
        if self.tokenizer is None or "input_ids" not in batch:
            return
        try:
            rows = batch_rows(batch)
            self.report = loss_mask(rows, self.tokenizer, n=1, max_length=max(len(r["input_ids"]) for r in rows))
        except Exception as exc:  # a batch lora_nb cannot read is the trainer's business: note it, train on
            self.warnings.append(f"the first batch's loss mask could not be checked ({type(exc).__name__}: {exc})")
            return
        self.warnings += [f"first batch: {c.line}" for c in self.report.checks if not c.ok]

    def __getattr__(self, name: str) -> Any:  # the collator's own attributes (``tokenizer``, ``pad_token_id`` …)
        return getattr(self.__dict__["collator"], name)


def count_tokens(trainer: Any) -> TokenCounter | None:
    """Wrap ``trainer.data_collator`` once in a ``TokenCounter`` (None: the trainer has no collator)."""
    collator = getattr(trainer, "data_collator", None)
    if collator is None:
        return None
    if isinstance(collator, TokenCounter):
        return collator
    tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor holds its tokenizer
    trainer.data_collator = TokenCounter(collator, tokenizer)
    return trainer.data_collator
