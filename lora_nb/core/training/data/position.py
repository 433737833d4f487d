"""Where a run is in its data (epoch, batches drawn, shuffle RNG states), so a resumed run draws the same batches."""

from __future__ import annotations

from typing import Any

import torch

from ....errors import CheckpointError


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a DataLoader shuffles with (its own and its sampler's, once each)."""
    found: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


class DataPosition:
    """Where a run is in its data: the epoch, batches drawn in it, and the RNG states its iterator began from."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epoch, self.consumed = -1, 0
        self.start: list[torch.Tensor] = []

    def new_iterator(self) -> Any:
        """A fresh pass over the data (the next epoch), remembering what its shuffle order depends on."""
        self.start = [torch.get_rng_state()] + [g.get_state() for g in loader_generators(self.loader)]
        self.epoch, self.consumed = self.epoch + 1, 0
        return iter(self.loader)

    def to_files(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"data.start.{i}": s for i, s in enumerate(self.start)}
        return tensors, {"epoch": self.epoch, "consumed": self.consumed, "states": len(self.start)}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> Any:
        """The iterator the checkpointed run was drawing from, advanced past the batches it had used."""
        self.epoch, self.consumed = meta["epoch"], meta["consumed"]
        if self.epoch < 0:
            return None
        start = [tensors[f"data.start.{i}"] for i in range(meta["states"])]
        generators = loader_generators(self.loader)
        if len(start) != 1 + len(generators):
            raise CheckpointError("the checkpoint's data was shuffled differently (another kind of data loader)")
        torch.set_rng_state(start[0])
        for gen, state in zip(generators, start[1:]):
            gen.set_state(state)
        self.start = start
        iterator = iter(self.loader)
        for _ in range(self.consumed):
            next(iterator)
        return iterator
