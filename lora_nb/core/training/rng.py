"""Every random number generator a training step may draw from, as tensors (for safetensors) and JSON.

A checkpoint keeps these so a resumed run draws the same dropout masks and shuffles as the run it continues.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG state a step may use: torch CPU and CUDA as tensors, python ``random`` and numpy's as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # the legacy form (numpy's default), not the dict
    name, keys, pos, has_gauss, cached = numpy_state
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    return tensors, {"python": [version, list(internal), gauss], "numpy": [name, int(pos), int(has_gauss),
                                                                           float(cached)]}


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Put back what ``rng_state`` returned (CUDA's only on a machine with as many GPUs)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
