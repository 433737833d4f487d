"""The precision a run computes in, decided here only: the autocast dtype, loss scaling, and why.

``auto``: bf16 autocast on GPUs with native bf16 (CUDA compute capability ≥ 8.0, Ampere and later); fp16
autocast with a gradient scaler on older CUDA GPUs (T4, V100: torch reports bf16 as supported there through
emulation, which is slow; fp16 with loss scaling is what the transformers Trainer uses on them); fp32 on the CPU
and MPS. ``fp32 | bf16 | fp16`` ask for one mode anywhere torch's autocast supports it. The adapter's weights
stay fp32 in every mode: autocast casts inside each op, the optimizer updates fp32 weights, and the scaler
unscales fp32 gradients. A step whose scaled gradients overflow is skipped by the scaler (its scale halves);
the loop counts such steps instead of failing the run.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import OptionError, first_line

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16 = (8, 0)  # compute capability from which CUDA GPUs compute in bf16 natively
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA compute capability of ``device`` (None off CUDA): the one seam tests use to play another GPU."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return int(major), int(minor)


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``name`` (fp32 | bf16 | fp16), on ``device_type``, and the reason it was chosen."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: no autocast, fp32)."""
        return _DTYPES[self.name]

    @property
    def scaled(self) -> bool:
        """True when gradients go through a ``GradScaler`` (fp16)."""
        return self.name == "fp16"

    def autocast(self) -> Any:
        """A fresh context manager computing in this precision (``with precision.autocast(): ...``)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> Any:
        """A new ``torch.amp.GradScaler`` for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.scaled else None

    def describe(self) -> str:
        """What a run's first line says, e.g. ``fp16 autocast + loss scaling (compute capability 7.5 has no
        native bf16)``."""
        what = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast + loss scaling"}[self.name]
        return f"{what} ({self.reason})"


def choose_precision(device: torch.device, asked: str = "auto") -> Precision:
    """The precision of a run on ``device`` for ``asked`` (``auto | fp32 | bf16 | fp16``), with its reason."""
    asked = str(asked).strip().lower()
    if asked not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}; got `{asked}`")
    capability = device_capability(device)
    cc = f"compute capability {capability[0]}.{capability[1]}" if capability else ""
    if asked == "auto":
        if capability is None:
            return Precision("fp32", device.type, f"no autocast on {device.type.upper()} unless asked")
        if capability >= NATIVE_BF16:
            return Precision("bf16", device.type, f"native bf16 on {cc}")
        chosen = Precision("fp16", device.type, f"{cc} has no native bf16")
    elif asked == "fp32":
        return Precision("fp32", device.type, "asked")
    elif asked == "bf16" and capability is not None and capability < NATIVE_BF16:
        chosen = Precision("bf16", device.type, f"asked; emulated on {cc}, slow: fp16 is the fast path there")
    else:
        chosen = Precision(asked, device.type, "asked")
    _check_supported(chosen)
    return chosen


def _check_supported(precision: Precision) -> None:
    """One-line error when this torch cannot autocast (or loss-scale) on the device."""
    problem = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            precision.autocast()
            if precision.scaled:
                precision.scaler()
        except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
            problem = first_line(exc)
    problem = problem or next((str(w.message) for w in caught if "autocast" in str(w.message).lower()
                               or "GradScaler" in str(w.message)), "")
    if problem:
        raise OptionError(f"{precision.name} on {precision.device_type} is not supported by torch "
                          f"{torch.__version__} ({problem}); use `precision=auto` or `precision=fp32`")
