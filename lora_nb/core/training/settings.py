"""``TrainSettings``: how to train, validated once for the Python API and ``%lora train`` alike."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ...errors import OptionError, did_you_mean
from ..adapters.options import as_number
from .precision import PRECISIONS

SCHEDULES = ("cosine", "linear", "constant")


# options the in-process run implements with its own callbacks (not the multi-process worker or an exported script)
IN_PROCESS_ONLY = ("save_every", "save_dir", "keep", "resume", "resume_weights_only", "patience", "min_delta",
                   "restore_best", "sample_prompts", "sample_every", "sample_tokens", "grad_checkpointing", "lr_ratio")


def as_flag(name: str, value: object) -> bool:
    """A boolean option given as a bool or as true/false text (``%%lora`` cells, argparse)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", "none", ""):
        return False
    raise OptionError(f"{name} takes true or false; got `{value}`")


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
    schedule: str = field(default="cosine", metadata={"help": "learning-rate decay: cosine | linear | constant",
                                                     "choices": SCHEDULES})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm (0: no clipping)"})
    eval_every: int | None = field(default=None, metadata={"help": "steps between evaluations (default: ~10 per run)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_length: int = field(default=512, metadata={"help": "tokens per text at most (text data)"})
    split_by_length: bool = field(default=True, metadata={
        "help": "token data on the CPU: each batch runs in pieces of similar length (the same loss and gradient, "
                "less padding)"})
    group_by_length: bool = field(default=False, metadata={
        "help": "token data: draw batches of similar length (shuffled mega-batches sorted by length; least "
                "padding, but each batch is no longer a random sample)", "was_on": True})
    precision: str = field(default="auto", metadata={
        "help": "auto (bf16 autocast on GPUs with native bf16, fp16 + loss scaling on older GPUs, fp32 on CPU/MPS) "
                "| fp32 | bf16 | fp16", "choices": PRECISIONS})
    processes: int = field(default=1, metadata={"help": "data-parallel processes: N GPUs, or N CPU processes (gloo)"})
    save_every: int | None = field(default=None, metadata={"help": "steps between checkpoints (with --save-dir)"})
    save_dir: str | None = field(default=None, metadata={"help": "folder for checkpoints (with --save-every)"})
    keep: int | None = field(default=None, metadata={"help": "newest checkpoints to keep (default: all)"})
    resume: str | None = field(default=None, metadata={"help": "continue from a checkpoint (or a save-dir's latest)"})
    resume_weights_only: bool = field(default=False, metadata={
        "help": "with --resume: restore the checkpoint's weights, step and data position only (a fresh optimizer "
                "and RNG: the losses differ from the interrupted run's); accepts checkpoints lacking that state"})
    patience: int | None = field(default=None,
                                 metadata={"help": "stop after N evaluations without improving by --min-delta"})
    min_delta: float = field(default=0.0, metadata={"help": "eval-loss drop that counts as an improvement"})
    restore_best: bool = field(default=False, metadata={"help": "put the best evaluated adapter back at the end"})
    sample_prompts: list | None = field(default=None,
                                        metadata={"help": "variable with prompts to generate from while training"})
    sample_every: int | None = field(default=None, metadata={"help": "steps between samples (default: ~5 per run)"})
    sample_tokens: int = field(default=32, metadata={"help": "new tokens per sample (greedy)"})
    grad_checkpointing: bool = field(default=False,
                                     metadata={"help": "recompute activations in backward (less memory, slower)"})
    lr_ratio: float | None = field(default=None, metadata={"help": "LoRA+: B's learning rate = R × A's (e.g. 16)"})
    spectra_every: int | None = field(default=None, metadata={
        "help": "steps between ΔW spectra kept in run.spectra_history (default: adaptive, ≤ 1/200 of step time; "
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
        self._check_long_run_options()

    def _check_long_run_options(self) -> None:
        """Checkpoints, early stopping, samples and LoRA+: numbers in range, options that need each other."""
        for name, low in (("save_every", 1), ("keep", 1), ("patience", 1), ("sample_every", 1),
                          ("sample_tokens", 1)):
            value = getattr(self, name)
            if value is not None:
                value = as_number(name, value, int)
                if value < low:
                    raise OptionError(f"{name} must be ≥ {low}; got {value}")
                setattr(self, name, value)
        for name in ("save_dir", "resume"):  # paths as text: settings are saved as JSON with checkpoints and exports
            if getattr(self, name) is not None:
                setattr(self, name, str(getattr(self, name)))
        if self.resume_weights_only and self.resume is None:
            raise OptionError("resume_weights_only goes with resume (`resume=…` / --resume)")
        if (self.save_every is None) != (self.save_dir is None):
            raise OptionError("checkpoints need both save_every and save_dir (`save_every=…, save_dir=…`)")
        self.min_delta = as_number("min_delta", self.min_delta, float)
        if self.min_delta < 0:
            raise OptionError(f"min_delta must be ≥ 0; got {self.min_delta:g}")
        if self.lr_ratio is not None:
            self.lr_ratio = as_number("lr_ratio", self.lr_ratio, float)
            if not self.lr_ratio > 0:
                raise OptionError(f"lr_ratio must be positive; got {self.lr_ratio:g}")
        for name in ("restore_best", "grad_checkpointing", "split_by_length", "group_by_length", "resume_weights_only"):
            setattr(self, name, as_flag(name, getattr(self, name)))
        if isinstance(self.sample_prompts, str):
            self.sample_prompts = [self.sample_prompts]
        if self.sample_prompts is not None and (not isinstance(self.sample_prompts, (list, tuple))
                                                or not self.sample_prompts
                                                or not all(isinstance(p, str) for p in self.sample_prompts)):
            raise OptionError("sample_prompts must be a non-empty list of strings")

    @property
    def uses_long_run_options(self) -> bool:
        """True when checkpoints, resume, early stopping, samples, LoRA+ or gradient checkpointing are asked for."""
        return any(getattr(self, name) != TrainSettings.__dataclass_fields__[name].default
                   for name in IN_PROCESS_ONLY)

    def warmup_steps(self, total: int) -> int:
        return int(self.warmup) if self.warmup >= 1 else round(self.warmup * total)


def check_training_options(names: Iterable[str]) -> None:
    """Refuse option names that are not ``TrainSettings`` fields: one ``OptionError`` naming them all."""
    known = TrainSettings.__dataclass_fields__
    unknown = sorted(set(names) - set(known))
    if unknown:
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
        raise OptionError(f"unknown training option(s): {', '.join(unknown)}{hint}")
