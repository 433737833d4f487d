"""Length-grouped batches for token data: less padding, the same samples once per epoch, repeatable per seed.

Each epoch shuffles the samples, cuts the order into mega-batches of ``MEGA`` batches, sorts each
mega-batch by length (longest first) and cuts it into batches; the batches are then drawn in a
shuffled order, so a step's width is not tied to where it falls in the epoch. Everything random
comes from the sampler's own ``generator``, whose state when an epoch begins is what a checkpoint
keeps (``position.py``): a resumed run draws the same batches. The scheme is transformers'
``LengthGroupedSampler`` (mega-batches of 50 batches) with the batch order shuffled as well.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

MEGA = 50  # batches per mega-batch


class LengthGroupedBatches(Sampler[list[int]]):
    """A batch sampler (``DataLoader(batch_sampler=…)``) yielding index lists of samples of similar length."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                 mega: int = MEGA) -> None:
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size, self.generator, self.mega = batch_size, generator, mega

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def batches(self) -> list[list[int]]:
        """One epoch's batches, drawing from ``generator``."""
        order = torch.randperm(len(self.lengths), generator=self.generator)
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=self.generator).tolist()
        return [batches[i] for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())


def padding_share(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of the positions of right-padded ``batches`` that are padding."""
    real = sum(lengths[i] for batch in batches for i in batch)
    total = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return 1.0 - real / total if total else 0.0
