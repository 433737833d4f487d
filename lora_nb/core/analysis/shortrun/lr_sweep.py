"""``lr_sweep``: the learning rate that suits LoRA, against the one that suits full fine-tuning, measured.

Short runs from the same start (``short_runs``) over a log-spaced grid of learning rates, for a new LoRA adapter
and, with ``vs_full=True``, for full fine-tuning of the same weights on the same batches. Each run's final loss
(held-out when ``eval_data`` is given) is one point of a loss-against-lr curve; the lowest point of each curve is
that method's best learning rate, and their ratio is what LoRA Without Regret measured (Schulman et al., Thinking
Machines, 2025: LoRA's best lr ≈ 10× full fine-tuning's, ≈ 15× for runs under 100 steps, roughly independent of
the rank when ΔW is scaled by alpha/r with a fixed alpha). The model is left exactly as it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ....errors import OptionError
from ... import registry
from ...adapters.options import AttachOptions, as_number
from ...kinds import check_callable, check_tokenizer
from ...training.callbacks import Callback
from ...training.settings import TrainSettings
from .hooks import ShortRunCallback, listeners
from .progress import StepLines, lines_unless_watched
from .runs import Recipe, ShortRun, short_run, split_options

ARMS = ("lora", "full")
LABELS = {"lora": "LoRA", "full": "full fine-tuning"}
PAPER = "LoRA Without Regret (Schulman et al., Thinking Machines, 2025)"


def _help(cls: type, name: str) -> str:
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


@dataclass
class SweepOptions:
    """How ``lr_sweep`` trains its runs (the LoRA fields mean what they mean for ``attach``)."""

    lrs: Any = field(default="1e-5:1e-2:8", metadata={
        "help": "learning rates: LOW:HIGH:N (N log-spaced values) or a comma-separated list"})
    vs_full: bool = field(default=False, metadata={"help": "also sweep full fine-tuning and report the lr ratio"})
    steps: int = field(default=20, metadata={"help": "optimizer steps per run"})
    batch_size: int = field(default=8, metadata={"help": "samples per step"})
    r: int = field(default=8, metadata={"help": _help(AttachOptions, "r")})
    alpha: float = field(default=32, metadata={"help": "scaling numerator (ΔW scaled by alpha/r); fixed alpha "
                                                       "keeps the best lr about the same across ranks"})
    targets: Any = field(default="auto", metadata={"help": _help(AttachOptions, "targets")})
    seed: int = field(default=0, metadata={"help": "seed for shuffling and LoRA's init (every run the same)"})
    device: str = field(default="auto", metadata={"help": _help(TrainSettings, "device")})

    def __post_init__(self) -> None:
        for name, kind in (("steps", int), ("batch_size", int), ("r", int), ("alpha", float), ("seed", int)):
            setattr(self, name, as_number(name, getattr(self, name), kind))


def parse_lrs(value: Any) -> list[float]:
    """``"1e-5:1e-2:8"`` → 8 log-spaced values; ``"1e-4,1e-3"`` or a sequence → those, ascending."""
    if isinstance(value, str) and value.count(":") == 2:
        low, high, n = (p.strip() for p in value.split(":"))
        try:
            low_f, high_f, count = float(low), float(high), int(n)
        except ValueError:
            raise OptionError(f"lrs: expected LOW:HIGH:N like 1e-5:1e-2:8; got `{value}`") from None
        if not (0 < low_f < high_f) or count < 2:
            raise OptionError(f"lrs: need 0 < LOW < HIGH and N ≥ 2; got `{value}`")
        return [float(x) for x in np.geomspace(low_f, high_f, count)]
    parts = [p for p in value.replace(" ", "").split(",") if p] if isinstance(value, str) else list(value)
    try:
        values = sorted({float(p) for p in parts})
    except (TypeError, ValueError):
        raise OptionError(f"lrs: expected LOW:HIGH:N or numbers like 1e-4,1e-3; got `{value}`") from None
    if not values or values[0] <= 0:
        raise OptionError(f"lrs: learning rates must be positive; got `{value}`")
    return values


class PointLines(ShortRunCallback, StepLines):
    """Text progress of the short runs outside a notebook (``lr_sweep``, ``placement``): each run as it begins, a
    progress line every few seconds while it trains, and its end."""

    def __init__(self, labels: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labels = labels or LABELS

    def on_run_begin(self, arm: str, index: int, total: int, lr: float | None = None,
                     size: int | None = None) -> None:
        self.label = f"{self.labels.get(arm, arm)} at lr {lr:.3g}"
        self.say(f"run {index + 1}/{total}: {self.label}")


@dataclass
class LrSweepResult:
    """The runs of a learning-rate sweep and what they show."""

    points: list[ShortRun]
    lrs: list[float]
    settings: dict[str, Any]  # steps, batch_size, r, alpha, targets, seed
    measure: str  # "eval loss" | "train loss (last quarter of the steps)"
    stopped: bool = False

    def arms(self) -> list[str]:
        return [arm for arm in ARMS if any(p.arm == arm for p in self.points)]

    def curve(self, arm: str) -> tuple[list[float], list[float]]:
        """(learning rates, final losses) of one arm's runs, ascending lr (``nan`` where a run diverged)."""
        runs = sorted((p for p in self.points if p.arm == arm), key=lambda p: p.lr)
        return [p.lr for p in runs], [p.final_loss for p in runs]

    def best(self, arm: str) -> ShortRun | None:
        """The run with the lowest final loss, None when every run of the arm diverged."""
        runs = [p for p in self.points if p.arm == arm and math.isfinite(p.final_loss)]
        return min(runs, key=lambda p: p.final_loss) if runs else None

    @property
    def ratio(self) -> float | None:
        """Best LoRA lr / best full fine-tuning lr (None without both)."""
        lora, full = self.best("lora"), self.best("full")
        return lora.lr / full.lr if lora and full else None

    def at_edge(self, arm: str) -> bool:
        """True when the best lr is the grid's lowest or highest value (the true best may lie outside)."""
        best = self.best(arm)
        return best is not None and best.lr in (min(self.lrs), max(self.lrs))

    def headline(self) -> str:
        parts = []
        for arm in self.arms():
            best = self.best(arm)
            edge = " (grid edge)" if self.at_edge(arm) else ""
            parts.append(f"best {LABELS[arm]} lr {best.lr:.2g}{edge}" if best else f"{LABELS[arm]}: every run diverged")
        if self.ratio is not None:
            parts.append(f"ratio {self.ratio:.3g}× (the paper: ≈ 10×, ≈ 15× under 100 steps)")
        return "; ".join(parts) + ("; stopped early" if self.stopped else "")

    def table(self) -> list[tuple[str, str, str, str]]:
        """Rows (method, lr, final loss, how it ended) for text and HTML."""
        rows = []
        for p in sorted(self.points, key=lambda p: (ARMS.index(p.arm), p.lr)):
            mark = " ← best" if p is self.best(p.arm) else ""
            ended = "diverged" if p.state == "failed" else p.state
            rows.append((LABELS[p.arm], f"{p.lr:.3g}", f"{p.final_loss:.4f}{mark}", ended))
        return rows

    def __repr__(self) -> str:
        lines = [f"learning-rate sweep ({self.settings['steps']} steps per run, {self.measure}): {self.headline()}"]
        lines += [f"  {m:<18} lr {lr:<9} loss {loss:<16} {ended}" for m, lr, loss, ended in self.table()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        body = "".join(f"<tr><td>{html.escape(m)}</td><td>{lr}</td><td>{loss}</td><td>{ended}</td></tr>"
                       for m, lr, loss, ended in self.table())
        return (f"<p><b>Learning-rate sweep</b> ({self.settings['steps']} steps per run, {self.measure}): "
                f"{html.escape(self.headline())}</p><table><tr><th>method</th><th>lr</th><th>final loss</th>"
                f"<th>run</th></tr>{body}</table>")


def lr_sweep(model: Any, data: Any, eval_data: Any = None, *, tokenizer: Any = None, loss_fn: Any = None,
             callbacks: Sequence[Callback] | None = None, **options: Any) -> LrSweepResult:
    """Short runs of ``model`` over a grid of learning rates; the loss against lr and the best lr of each method.

    ``options``: those of ``SweepOptions`` — ``lrs`` ("1e-5:1e-2:8" or a list), ``vs_full`` (sweep full
    fine-tuning too), ``steps``, ``batch_size``, LoRA's ``r``, ``alpha``, ``targets``, ``seed``, ``device`` —
    and other ``TrainSettings`` (warmup, schedule, max_length, …) for every run. Each run starts from the
    model's base weights (a copy; the model, its adapters and flags stay exactly as they are). Blocks until done;
    a ``run.stop()`` from a callback, or Ctrl-C, ends the sweep after the current run with the runs so far.
    ``callbacks``: None outside a notebook prints a line per run and progress while it trains; ``[]``: nothing.
    """
    model = registry.as_module(model)
    opts, extras = split_options(SweepOptions, options, "lr_sweep", "lrs=, steps=, batch_size=, seed=, device=")
    check_tokenizer(tokenizer)
    check_callable(loss_fn, "loss_fn")
    settings = TrainSettings(steps=opts.steps, batch_size=opts.batch_size, seed=opts.seed, device=opts.device,
                             spectra_every=0, **extras)
    lrs = parse_lrs(opts.lrs)
    lora = AttachOptions(r=opts.r, alpha=opts.alpha, targets=opts.targets)
    recipe = Recipe(data, eval_data, tokenizer, loss_fn, settings, lines_unless_watched(callbacks, PointLines))
    measure = "eval loss" if eval_data is not None else "train loss (last quarter of the steps)"
    result = LrSweepResult([], lrs, dict(steps=opts.steps, batch_size=opts.batch_size, r=opts.r, alpha=opts.alpha,
                                         targets=opts.targets, seed=opts.seed), measure)
    plan = [(arm, lr) for arm in ARMS[: 2 if opts.vs_full else 1] for lr in lrs]
    watchers = listeners(recipe.callbacks)
    try:
        for index, (arm, lr) in enumerate(plan):
            for cb in watchers:
                cb.on_run_begin(arm, index, len(plan), lr=lr)
            point = short_run(model, recipe, lr, lora if arm == "lora" else None)
            if point.state == "stopped":
                break
            result.points.append(point)
            for cb in watchers:
                cb.on_run_end(point)
    except KeyboardInterrupt:  # Ctrl-C between two runs' steps (copying, evaluating): the same as a stop
        pass
    result.stopped = len(result.points) < len(plan)
    for cb in watchers:
        cb.on_result(result)
    return result
