"""``TrainSettings``: how to train, validated once for the Python API and ``%lora train`` alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import OptionError
from ..adapters.options import as_number

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainSettings:
    """How to train (one place for defaults and checks; ``%lora train`` builds its options from it)."""

    steps: int | None = field(default=None, metadata={"help": "optimizer steps (default: one epoch)"})
    epochs: float | None = field(default=None, metadata={"help": "passes over the data, instead of --steps"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate of AdamW"})
    batch_size: int = field(default=8, metadata={"help": "samples per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA, then MPS, then CPU) | cpu | cuda[:N] | mps"})
    seed: int | None = field(default=0, metadata={"help": "seed for shuffling and dropout"})
    warmup: float = field(default=0.0, metadata={"help": "warmup steps (≥ 1) or fraction of the steps (< 1)"})
    schedule: str = field(default="cosine", metadata={"help": "learning-rate decay: cosine | linear | constant"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm (0: no clipping)"})
    eval_every: int | None = field(default=None, metadata={"help": "steps between evaluations (default: ~10 per run)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_length: int = field(default=512, metadata={"help": "tokens per text at most (text data)"})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 autocast on capable GPUs) | bf16 | fp32"})
    processes: int = field(default=1, metadata={"help": "data-parallel processes: N GPUs, or N CPU processes (gloo)"})
    spectra_every: int | None = field(default=None, metadata={
        "help": "steps between ΔW spectra kept in run.spectra_history (default: adaptive, ≤ 1/50 of step time; "
                "0: off)"})

    def __post_init__(self) -> None:
        for name, kind, low in (("steps", int, 1), ("batch_size", int, 1), ("grad_accum", int, 1),
                                ("eval_every", int, 1), ("max_length", int, 1), ("epochs", float, 0),
                                ("processes", int, 1), ("spectra_every", int, 0)):
            value = getattr(self, name)
            if value is not None:
                value = as_number(name, value, kind)
                if value < low or (kind is float and value <= 0):
                    raise OptionError(f"{name} must be {f'≥ {low}' if kind is int else 'positive'}; got {value:g}")
                setattr(self, name, value)
        if self.steps is not None and self.epochs is not None:
            raise OptionError("give steps or epochs, not both")
        self.lr = as_number("lr", self.lr, float)
        if not self.lr > 0:
            raise OptionError(f"lr must be positive; got {self.lr:g}")
        self.warmup = as_number("warmup", self.warmup, float)
        self.weight_decay = as_number("weight_decay", self.weight_decay, float)
        self.max_grad_norm = as_number("max_grad_norm", self.max_grad_norm or 0, float) or None
        if self.seed is not None:
            self.seed = as_number("seed", self.seed, int)
        for name, choices in (("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if str(getattr(self, name)).lower() not in choices:
                raise OptionError(f"{name} must be one of {', '.join(choices)}; got `{getattr(self, name)}`")
            setattr(self, name, str(getattr(self, name)).lower())
        if self.warmup < 0 or self.weight_decay < 0:
            raise OptionError("warmup and weight_decay must be ≥ 0")

    def warmup_steps(self, total: int) -> int:
        return int(self.warmup) if self.warmup >= 1 else round(self.warmup * total)
