"""An adapter's tensors selected by exact name segments, so any identifier is a safe adapter name.

peft keeps each adapter's tensors under its name as one segment of the parameter name
(``fc.lora_A.<name>.weight``, ``head.modules_to_save.<name>.weight``); in an adapter file the segment is
dropped (``fc.lora_A.weight``; DoRA's ``lora_magnitude_vector.<name>.weight`` is stored as
``lora_magnitude_vector``). Matching that segment exactly — never as a substring — keeps ``a`` apart from
``lora_A``, and ``default`` apart from ``default2``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from ...errors import preview
from .. import registry
from .status import adapter_named_parameters


def file_key(name: str, adapter: str) -> str:
    """The key peft's adapter files use for the model parameter ``name`` of ``adapter``."""
    parts = name.split(".")
    for i in range(len(parts) - 1):
        head, segment = parts[i], parts[i + 1]
        if segment != adapter or not (head.startswith("lora_") or head == "modules_to_save"):
            continue
        if head == "modules_to_save":
            return ".".join(parts[:i] + parts[i + 2:])
        if head == "lora_magnitude_vector" and parts[i + 2:] == ["weight"]:
            return ".".join(parts[: i + 1])
        return ".".join(parts[: i + 1] + parts[i + 2:])
    raise ValueError(f"`{name}` is not a parameter of adapter `{adapter}`")


def adapter_parameters_by_key(model: nn.Module, adapter: str) -> dict[str, nn.Parameter]:
    """``{file key: parameter}`` of every parameter of ``adapter`` (LoRA factors, saved modules)."""
    return {file_key(n, adapter): p for n, p in adapter_named_parameters(model, adapter)}


def adapter_state_dict(model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """A copy of ``adapter``'s tensors keyed as in its file (without peft's ``base_model.model.`` prefix), on the
    CPU, taken at a step boundary of a run in progress: under the session's lock, which the training loop holds
    while its optimizer writes the weights (so a save beside a run never mixes two steps)."""
    session = registry.find(model)
    with session.lock if session is not None else nullcontext():
        return {k: p.detach().to("cpu", copy=True).contiguous()
                for k, p in adapter_parameters_by_key(model, adapter).items()}


def fill_adapter(model: nn.Module, adapter: str, tensors: dict[str, torch.Tensor]) -> str:
    """Copy ``tensors`` (keyed as in a file) into ``adapter``'s parameters; if the keys or shapes do not fit,
    copy nothing and return what is wrong in one line (else ``""``)."""
    params = adapter_parameters_by_key(model, adapter)
    problem = mismatch(tensors, {k: tuple(p.shape) for k, p in params.items()})
    if not problem:
        with torch.no_grad():
            for key, p in params.items():
                p.copy_(tensors[key])
    return problem


def mismatch(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> str:
    """A one-line description of missing, unexpected and wrongly shaped keys, or ``""``."""
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [f"{k} {tuple(tensors[k].shape)} != {expected[k]}" for k in expected
             if k in tensors and tuple(tensors[k].shape) != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {preview(missing, 2)}")
    if wrong:
        parts.append(f"{len(wrong)} wrong shape(s): {preview(wrong, 2)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {preview(unexpected, 2)}")
    return "; ".join(parts)
