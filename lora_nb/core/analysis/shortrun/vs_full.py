"""``vs_full``: a LoRA adapter and a full fine-tune trained side by side from the same weights, measured.

Both arms start from deep copies of the model's base weights (LoRA layers the model already has
are stripped from the copies; the model itself is left exactly as it was), see the same batches in
the same order (same data, steps, batch size, seed) and run through the same training loop
(``training.run.launch``), so their times per step compare. Per arm it measures: parameters updated,
bytes of trainable state (parameters + gradients + AdamW moments and step tensors, exact from
dtypes), peak memory (CUDA peak allocated, or a sampled process-RSS peak on CPU), median time per
step, final train loss (mean of the last steps, and a full pass over the training data after
training), eval loss and accuracy, the generalization gap (eval − train) and the checkpoint size
on disk (the adapter saved by ``lora_nb.save`` vs the whole model saved with safetensors). With
``sizes``, both arms are trained again on random subsets of those sizes (the data-size sweep).
The result lays this out as the table of the LoRA explainer (see ``vs_full_result``).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import statistics
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ....errors import AdapterError, DataError, LoraNBError, OptionError, TrainingError
from ... import registry
from ...adapters import switch
from ...adapters.attach import attach, strip_lora
from ...adapters.io import WEIGHTS, save
from ...adapters.options import AttachOptions
from ...training.callbacks import Callback
from ...training.data.batches import takes_model
from ...training.device import place_model, resolve_device
from ...training.memory.budget import PeakMemory, trainable_state_bytes
from ...training.run import launch, prepare_run, trainable_parameters
from ...training.settings import TrainSettings, check_training_options
from .directions import FactorWatch, WeightWatch, compare, first_batch_gradients
from .evaluation import Bare, evaluate
from .hooks import ShortRunCallback, listeners
from .progress import StepLines, lines_unless_watched
from .sweep import parse_sizes, subset
from .vs_full_result import Arm, VsFullResult

ARMS = ("lora", "full")
ADAPTER = "vs_full"  # the adapter's name on the LoRA copy
_FIXED = {"steps", "epochs", "lr", "batch_size", "seed", "device"}  # set by vs_full's own arguments


VsFullCallback = ShortRunCallback  # the name earlier releases exported (``lora_nb.VsFullCallback``)


def _help(cls: type, name: str) -> str:
    return next(f.metadata["help"] for f in fields(cls) if f.name == name)


@dataclass
class VsFullOptions:
    """How ``vs_full`` trains its two arms (the LoRA fields mean what they mean for ``attach``)."""

    r: int = field(default=8, metadata={"help": _help(AttachOptions, "r")})
    alpha: float = field(default=16, metadata={"help": _help(AttachOptions, "alpha")})
    targets: Any = field(default="auto", metadata={"help": _help(AttachOptions, "targets")})
    dropout: float = field(default=0.0, metadata={"help": _help(AttachOptions, "dropout")})
    modules_to_save: Any = field(default=None, metadata={"help": "modules the LoRA arm trains in full too, e.g. "
                                                                 "a new head"})
    steps: int = field(default=200, metadata={"help": "optimizer steps per arm"})
    lr_lora: float = field(default=1e-2, metadata={"help": "AdamW learning rate of the LoRA arm"})
    lr_full: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the full fine-tune"})
    batch_size: int = field(default=8, metadata={"help": "samples per step (as for train)"})
    seed: int = field(default=0, metadata={"help": "seed for shuffling and LoRA's init (both arms see the same "
                                                   "batches)"})
    sizes: Any = field(default=None, metadata={"help": "training-set sizes for the data-size sweep, e.g. "
                                                       "25,50,100,200 (needs eval data)"})
    device: str = field(default="auto", metadata={"help": _help(TrainSettings, "device")})


@dataclass
class _Shared:
    """Everything both arms share, checked before anything trains."""

    data: Any
    eval_data: Any
    lora: AttachOptions
    settings: dict[str, TrainSettings]  # per arm
    tokenizer: Any
    loss_fn: Any
    callbacks: list[Callback]


def vs_full(model: Any, data: Any, eval_data: Any = None, *, tokenizer: Any = None, loss_fn: Any = None,
            callbacks: Sequence[Callback] | None = None, **options: Any) -> VsFullResult:
    """Train a LoRA adapter and a full fine-tune of ``model`` on the same data; returns the measured comparison.

    ``data``/``eval_data``/``tokenizer``/``loss_fn``: as for ``lora_nb.train``. ``options``: those of
    ``VsFullOptions`` — LoRA's ``r``, ``alpha``, ``targets``, ``dropout``, ``modules_to_save``; for both
    arms ``steps`` optimizer steps of ``batch_size`` samples shuffled from ``seed``, AdamW at ``lr_lora`` /
    ``lr_full`` (LoRA usually wants a larger learning rate); ``sizes`` for the data-size sweep (needs
    ``eval_data``), e.g. ``[25, 50, 100, 200]`` or ``"25,50,100,200"`` — and any other training setting
    of ``TrainSettings`` for both arms (grad_accum, warmup, schedule, weight_decay, …). ``callbacks``
    watch every arm's run (``run.adapter`` is "lora" or "full"; a ``ShortRunCallback`` also hears the plan,
    which arm comes next and the result; None outside a notebook: text lines, ``[]``: nothing printed).
    Blocks until done; the model is not changed (both arms train deep copies of its base weights, and the
    LoRA arm a new adapter of its own, not one the model has).
    """
    model = registry.as_module(model)
    own = {f.name for f in fields(VsFullOptions)}
    opts = VsFullOptions(**{k: v for k, v in options.items() if k in own})
    extras = {k: v for k, v in options.items() if k not in own}
    lora = dict(r=opts.r, alpha=opts.alpha, targets=opts.targets, dropout=opts.dropout,
                modules_to_save=opts.modules_to_save)
    common = dict(steps=opts.steps, batch_size=opts.batch_size, seed=opts.seed, device=opts.device)
    shared = _share(data, eval_data, lora, common, extras, {"lora": opts.lr_lora, "full": opts.lr_full},
                    tokenizer, loss_fn, lines_unless_watched(callbacks, ArmLines))
    sizes = parse_sizes(opts.sizes, data, eval_data)
    watchers = listeners(shared.callbacks)
    total = len(ARMS) * (1 + len(sizes))
    for cb in watchers:
        cb.on_begin(plan_line(model, shared, sizes))
        cb.on_stage("warm-up: 2 unmeasured steps of each arm")
    _warm_up(model, shared, data)
    factors = FactorWatch(ADAPTER)
    arms = {"lora": _arm("lora", model, shared, data, (0, total), checkpoint=True, watch=factors)}
    weights = WeightWatch(arms["lora"].targets)
    arms["full"] = _arm("full", model, shared, data, (1, total), checkpoint=True, watch=weights)
    for cb in watchers:
        cb.on_stage(f"directions of both updates in {len(weights.names)} layers")
    directions = compare(factors, weights, _step0_gradients(model, shared, data, arms["lora"].targets))
    seed = shared.settings["lora"].seed or 0
    plan = [(n, arm) for n in sizes for arm in ARMS]
    sweep = [_arm(arm, model, shared, subset(data, n, seed), (2 + i, total), size=n) for i, (n, arm) in enumerate(plan)]
    result = VsFullResult(arms["lora"], arms["full"], sweep, dict(shared.settings), shared.lora, directions)
    for cb in watchers:
        cb.on_result(result)
    return result


def plan_line(model: nn.Module, shared: _Shared, sizes: list[int]) -> str:
    """What the comparison trains, in one line: a new LoRA adapter with its own settings, not the model's own."""
    lora, s = shared.lora, shared.settings
    session = registry.find(model)
    own = session is not None and bool(session.records)
    def names(value: Any) -> str:
        return value if isinstance(value, str) else ",".join(map(str, value))

    head = f", {names(lora.modules_to_save)} in full" if lora.modules_to_save else ""
    sweep = f"; then both again on {', '.join(map(str, sizes))} examples" if sizes else ""
    return (f"vs-full: a new LoRA adapter (r={lora.r}, alpha {lora.alpha:g}, targets {names(lora.targets)}{head}, "
            f"lr {s['lora'].lr:g}) against full fine-tuning (lr {s['full'].lr:g}), each {s['lora'].steps} steps "
            f"of batch {s['lora'].batch_size} from the same base weights"
            + (" (the adapters attached to the model are not used)" if own else "") + sweep)


class ArmLines(ShortRunCallback, StepLines):
    """Text progress of ``vs_full`` (a terminal, a script): the plan, each stage and arm, progress while it trains."""

    def on_begin(self, plan: str) -> None:
        self.say(plan)

    def on_stage(self, text: str) -> None:
        self.say(text)

    def on_run_begin(self, arm: str, index: int, total: int, lr: float | None = None,
                     size: int | None = None) -> None:
        self.label = ("LoRA" if arm == "lora" else "full fine-tuning") + (f" on {size} examples" if size else "")


def _share(data, eval_data, lora: dict, common: dict, extras: dict, lrs: dict, tokenizer, loss_fn,
           callbacks) -> _Shared:
    fixed = sorted(set(extras) & _FIXED)
    if fixed:
        raise OptionError(f"vs_full sets {', '.join(fixed)} itself: use steps=, batch_size=, seed=, device=, "
                          "lr_lora= and lr_full=")
    if str(extras.get("processes", 1)) != "1":
        raise OptionError("vs_full trains both arms in this process, one after the other; drop processes")
    check_training_options(extras)
    if data is None:
        raise DataError("no training data: pass data=… (a list of (input, target) pairs, tensors, texts, a Dataset)")
    options = AttachOptions(name=ADAPTER, **lora)
    settings = {arm: TrainSettings(lr=lrs[arm], **common, **extras) for arm in ARMS}
    return _Shared(data, eval_data, options, settings, tokenizer, loss_fn, list(callbacks or []))


def base_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``'s base weights (its LoRA layers stripped); ``model`` itself is not touched."""
    session = registry.find(model)
    if session is None:
        return _deepcopy(model)
    with session.lock:  # a consistent snapshot, even while a run trains the adapter
        if switch.merged_adapters(session):
            raise AdapterError("an adapter is merged into the base weights; unmerge it first "
                               "(`lora_nb.unmerge(model)`) so both arms start from the base weights")
        clone = _deepcopy(model)
    strip_lora(clone)
    for name, p in clone.named_parameters():
        p.requires_grad_(session.requires_grad.get(name, True))
    return clone


def _deepcopy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise LoraNBError(f"cannot copy the model for the comparison ({type(exc).__name__}: {exc})") from None


def _arm(arm: str, model: nn.Module, shared: _Shared, data: Any, place: tuple[int, int], size: int | None = None,
         checkpoint: bool = False, watch: Callback | None = None) -> Arm:
    """Train one arm on a fresh copy and measure it; ``place``: (index, total) of this run in the comparison."""
    settings = copy.copy(shared.settings[arm])  # the run may fill in eval_every
    for cb in listeners(shared.callbacks):
        cb.on_run_begin(arm, *place, lr=settings.lr, size=size)
    clone = base_copy(model)
    total = sum(p.numel() for p in clone.parameters())
    target = resolve_device(settings.device)
    place_model(clone, target)
    with PeakMemory(target) as memory:
        run, params, targets = _train(arm, clone, shared, data, settings, quiet=size is not None, watch=watch)
    state = trainable_state_bytes(params)
    file, written = _checkpoint(arm, clone) if checkpoint else ("", None)
    train_loss, train_acc = evaluate(clone, data, shared, settings, target)
    eval_loss, eval_acc = (evaluate(clone, shared.eval_data, shared, settings, target) if shared.eval_data is not None
                           else (None, None))
    losses = [r["loss"] for r in run.history]
    last = losses[-max(1, min(10, len(losses) // 5)):]
    result = Arm(arm, sum(p.numel() for p in params), total, state, memory.start, memory.peak, memory.kind,
                 statistics.median(r["seconds"] for r in run.history), sum(last) / len(last), train_loss,
                 eval_loss, train_acc, eval_acc, written, file, list(run.history), list(run.evals), size,
                 run.where, targets)
    del clone, params, run
    if target.type == "cuda":  # give the next arm the memory back (reference cycles included)
        gc.collect()
        torch.cuda.empty_cache()
    for cb in listeners(shared.callbacks):
        cb.on_run_end(result)
    return result


def _train(arm: str, clone: nn.Module, shared: _Shared, data: Any, settings: TrainSettings, quiet: bool,
           watch: Callback | None = None):
    """Attach LoRA (the LoRA arm) or take every weight (the full arm) and train through ``launch``."""
    if arm == "lora":
        if settings.seed is not None:
            torch.manual_seed(settings.seed)  # the adapter's random init
        with warnings.catch_warnings():
            if quiet:  # attach's warnings were shown once, for the main arm
                warnings.simplefilter("ignore")
            holder = attach(clone, **vars(shared.lora))
        params, targets = trainable_parameters(holder), list(holder.records[ADAPTER]["options"]["targets"])
    else:
        holder, targets = Bare(clone), []
        params = [p for p in clone.parameters() if p.is_floating_point()]
    prepared = prepare_run(holder, data, shared.eval_data, shared.tokenizer, shared.loss_fn, settings, params=params)
    callbacks = [*shared.callbacks, *([watch] if watch else [])]
    run = launch(holder, arm, prepared, background=False, callbacks=callbacks, custom_loss=takes_model(shared.loss_fn))
    if run.state != "finished" or not run.history:
        label = "LoRA" if arm == "lora" else "full fine-tuning"
        raise TrainingError(f"the {label} arm {run.state}: {run.message}")
    return run, params, targets


def _step0_gradients(model: nn.Module, shared: _Shared, data: Any, names: list[str]) -> dict[str, torch.Tensor]:
    """The full gradient ∂L/∂W of each LoRA target at the base weights, on the first training batch."""
    settings = shared.settings["full"]
    clone = base_copy(model)
    device = resolve_device(settings.device)
    place_model(clone, device)
    batches = prepare_run(Bare(clone), data, None, shared.tokenizer, shared.loss_fn, settings, params=[]).batches
    return first_batch_gradients(clone, batches, names, device)


def _warm_up(model: nn.Module, shared: _Shared, data: Any) -> None:
    """Two unmeasured steps of each arm, so one-time costs (first kernels, allocations) count for neither."""
    for arm in ARMS:
        settings = dataclasses.replace(shared.settings[arm], steps=2)
        clone = base_copy(model)
        place_model(clone, resolve_device(settings.device))
        _train(arm, clone, dataclasses.replace(shared, eval_data=None, callbacks=[]), data, settings, quiet=True)


def _checkpoint(arm: str, clone: nn.Module) -> tuple[str, int]:
    """Write the arm's checkpoint in a temporary folder; its file name and size in bytes."""
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory(prefix="lora_nb-vs-full-") as folder:
        if arm == "lora":
            path = save(clone, Path(folder) / "adapter", adapter=ADAPTER) / WEIGHTS
        else:
            path = Path(folder) / "model.safetensors"
            save_model(clone, str(path))  # safetensors' save_file of the state_dict, tied weights once
        return path.name, path.stat().st_size
