"""Where a run trains: device choice and model placement."""

from __future__ import annotations

import torch

from ...errors import OptionError


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA, then MPS, then CPU; an explicit device must exist here."""
    name = str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        target = torch.device(name)
    except (RuntimeError, ValueError):
        raise OptionError(f"device must be auto, cpu, cuda[:N] or mps; got `{device}`") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(target.type, False):
        raise OptionError(f"device `{device}` is not available here; use `device=\"auto\"` or `device=\"cpu\"`")
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise OptionError(f"device `{device}` does not exist (this machine has {torch.cuda.device_count()} GPU(s))")
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    return target


def place_model(model: torch.nn.Module, target: torch.device) -> None:
    """Move a single-device model to ``target`` (a model spread over devices by device_map stays put)."""
    devices = {p.device for p in model.parameters()}
    if len(devices) == 1 and devices != {target}:
        model.to(target)

