"""A batch of token rows run as pieces of similar length: the batch's own loss and gradient, less padding.

A right-padded batch of 8 conversations costs 8 × its longest row in every layer, however short the
other 7 are. Here its rows are sorted by length and cut into pieces, each trimmed to its own longest
row; each piece runs forward and backward on its own, its mean loss weighted by its share of the
batch's loss-bearing positions, so the gradients summed over the pieces are the whole batch's
(mean cross-entropy over the same positions; rows are independent of each other and of padding on
their right). The optimizer sees exactly the batches random batching gives: unlike batches grouped
by length (``grouping.py``) nothing about what is learned changes, only the positions computed.
Rows with no loss-bearing position are left out: they add nothing to the loss or the gradient.

Where to cut: each piece costs its rows × its longest row, plus a fixed cost per forward and
backward (kernel dispatch, Python) worth ``overhead`` positions; the cuts that minimise the sum
come from a dynamic programme over the sorted rows. On the CPU the fixed cost was measured at
21-41 positions on one thread and 41-55 on two (tiny GPT-2 4×128, an 8×512 Llama, SmolLM2-135M;
``PER_THREAD`` × threads is its estimate). Other devices run whole batches: a GPU's fixed cost is
kernel launches against far cheaper positions, and was not measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .chat import IGNORE

PER_THREAD = 32  # fixed cost of one forward + backward on the CPU, in token positions per intra-op thread
KEYS = frozenset({"input_ids", "attention_mask", "labels"})
BLOCKS = 64  # at most this many runs of sorted rows enter the programme (rows beyond: blocks of equal count)


def cpu_overhead() -> int:
    """The fixed cost of a piece on the CPU, in positions, for this process's thread count."""
    return PER_THREAD * max(1, torch.get_num_threads())


def cuts(lengths: list[int], overhead: int) -> list[list[int]]:
    """Row indices in pieces (longest rows first) minimising Σ rows × longest + ``overhead`` × pieces."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    size = -(-len(order) // BLOCKS)  # rows per block; 1 for batches of up to BLOCKS rows
    blocks = [order[i:i + size] for i in range(0, len(order), size)]
    ends = [0]  # rows before each block
    for block in blocks:
        ends.append(ends[-1] + len(block))
    best, start = [0] + [0] * len(blocks), [0] * (len(blocks) + 1)
    for j in range(1, len(blocks) + 1):  # best[j]: cheapest cover of the first j blocks
        best[j], start[j] = min((best[i] + (ends[j] - ends[i]) * lengths[blocks[i][0]] + overhead, i)
                                for i in range(j))
    pieces, j = [], len(blocks)
    while j:
        pieces.append([row for block in blocks[start[j]:j] for row in block])
        j = start[j]
    return pieces[::-1]


def splittable(batch: Any) -> bool:
    """A right-padded token batch of ``input_ids``, ``attention_mask`` and ``labels`` (rows × positions)."""
    if not isinstance(batch, Mapping) or set(batch) != KEYS:
        return False
    ids, mask, labels = (batch[k] for k in ("input_ids", "attention_mask", "labels"))
    return (all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in (ids, mask, labels))
            and ids.dim() == 2 and ids.shape == mask.shape == labels.shape and len(ids) > 1)


def pieces(batch: Mapping[str, torch.Tensor], overhead: int) -> list[tuple[dict[str, torch.Tensor], float]]:
    """``(piece, weight)`` pairs whose weighted mean losses sum to ``batch``'s mean loss; ``[(batch, 1.0)]``
    when one piece is cheapest or nothing in the batch carries loss."""
    mask, labels = batch["attention_mask"], batch["labels"]
    counts = mask.sum(1)
    if not bool((mask.bool() == (torch.arange(mask.shape[1]) < counts[:, None])).all()):
        return [(dict(batch), 1.0)]  # not right-padded (padding on the left, or a gap inside a row): as it is
    lengths = counts.tolist()
    bearing = (labels[:, 1:] != IGNORE).sum(1).tolist()
    total = sum(bearing)
    rows = [row for row, n in enumerate(bearing) if n]
    if not total:
        return [(dict(batch), 1.0)]
    plan = cuts([lengths[row] for row in rows], overhead)
    if len(plan) == 1 and len(rows) == len(lengths):
        return [(dict(batch), 1.0)]
    out = []
    for piece in plan:
        index = torch.tensor([rows[i] for i in piece])
        width = max(lengths[rows[i]] for i in piece)
        part = {k: v[index, :width] for k, v in batch.items()}
        out.append((part, sum(bearing[rows[i]] for i in piece) / total))
    return out
