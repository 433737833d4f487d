"""Exact tensor memory of a block of code on any device: every storage an op creates, counted while it lives.

``TrackedAllocations`` is a ``TorchDispatchMode``: each tensor an op returns in new storage (not
an input's: in-place ops and views allocate nothing) has that storage counted once, in bytes,
until it is freed (a weakref finalizer; torch keeps one Python object per live storage). ``peak``
is the most bytes alive at once above what existed before the block — activations, gradients,
optimizer state, temporaries — without the allocator's caching or anything else the process
does. It sees what runs on the calling thread (CPU autograd does). ``SavedTensorBytes`` counts
what autograd keeps for backward (``saved_tensors_hooks``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TrackedAllocations(TorchDispatchMode):
    """``with TrackedAllocations() as t: …`` then ``t.peak`` and ``t.live`` (bytes above the start)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: dict[int, int] = {}

    def _forget(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._seen and key not in inputs:  # in-place ops and views allocate nothing
                    self._seen[key] = storage.nbytes()
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._forget, key)
        self.peak = max(self.peak, self.live)
        return out


def storage_keys(tensors: Iterable[torch.Tensor]) -> set[int]:
    """Data pointers of the storages behind ``tensors`` (to leave weights out of a count)."""
    return {t.untyped_storage().data_ptr() for t in tensors}


class SavedTensorBytes:
    """``with SavedTensorBytes(exclude) as s: forward`` then ``s.bytes``: memory autograd saved for backward.

    Each storage counts once however many ops save it; storages in ``exclude`` (the model's weights
    and buffers, alive anyway) count zero. ``keep=False``: nothing is kept for backward (a forward
    only measure that holds no memory; the graph then cannot go backward).
    """

    def __init__(self, exclude: set[int], keep: bool = True) -> None:
        self.exclude, self.keep, self.bytes = exclude, keep, 0
        self._seen: set[int] = set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor | None:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self.exclude and ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes += storage.nbytes()
            weakref.finalize(storage, self._seen.discard, ptr)  # a freed address may hold a new tensor later
        return t if self.keep else None

    def _unpack(self, t: torch.Tensor | None) -> torch.Tensor:
        if t is None:
            raise RuntimeError("this graph was built only to count saved bytes (keep=False); it cannot go backward")
        return t

    def __enter__(self) -> "SavedTensorBytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
