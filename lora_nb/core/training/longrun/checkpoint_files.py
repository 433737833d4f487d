"""Training checkpoints on disk: written atomically, read back verified, pruned to the newest few.

A checkpoint is a folder ``checkpoint-000120`` holding

- ``adapter/``: the adapter in PEFT format, with its own manifest (``lora_nb.core.adapters.io.write_adapter``);
- ``state.safetensors``: every tensor of the run's state (AdamW moments and steps, RNG states);
- ``state.json``: everything else (step, settings, history, optimizer groups, data position,
  RNG states that are plain numbers). It is written last: a folder without it is not a checkpoint.

No pickle anywhere. A checkpoint is written with ``lora_nb.core.files.atomic_folder``: built in a hidden staging
folder beside its final place, with a manifest (SHA-256 per file), and put in place in one step, so a kill or a
full disk mid-write leaves every earlier checkpoint as it was. ``resolve_checkpoint`` re-hashes them: a resume
takes the newest one whose files match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ....errors import CheckpointError, first_line
from ...files import MANIFEST, atomic_folder, clean_stale, recover, verify
from ...folder_swap import JOURNAL

STATE_JSON, STATE_TENSORS, ADAPTER = "state.json", "state.safetensors", "adapter"
FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def write_checkpoint(model: Any, adapter: str, folder: Path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write one checkpoint to ``folder`` atomically; returns ``folder``. A full disk or lost mount raises a one-line
    ``FileWriteError`` and leaves ``folder`` (a checkpoint of the same step written before) as it was."""
    from safetensors.torch import save_file

    from ...adapters.io import write_adapter

    with atomic_folder(folder, "checkpoint") as staging:
        (staging / ADAPTER).mkdir()
        write_adapter(model, adapter, staging / ADAPTER)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(staging / STATE_TENSORS))
        (staging / STATE_JSON).write_text(json.dumps({"format": FORMAT, **state}))
    return folder


def complete_checkpoints(save_dir: Path) -> list[tuple[int, Path]]:
    """The checkpoints in ``save_dir`` as (step, folder), oldest first (not verified: see ``resolve_checkpoint``)."""
    if not save_dir.is_dir():
        return []
    for journal in save_dir.glob(f".checkpoint-*{JOURNAL}"):  # swaps a kill interrupted: finished first
        recover(save_dir / journal.name[1:].removesuffix(JOURNAL))
    found = []
    for child in save_dir.iterdir():
        match = _NAME.match(child.name)
        if match and (child / STATE_JSON).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (files that differ from its manifest), or None. A checkpoint without a
    manifest (written by an earlier lora_nb; a new one is never at its final name without one) is not refused."""
    found = verify(folder)
    if found.has_manifest and not found.ok:
        more = f" (and {len(found.differing) - 1} more)" if len(found.differing) > 1 else ""
        return f"{found.differing[0]}{more} differs from its {MANIFEST} (corrupted or changed on disk)"
    return None


def prune(save_dir: Path, keep: int | None, best_step: int | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints; never the newest verified one, nor ``best_step``'s (the best
    evaluation of the run). Staging folders of interrupted writes are removed too."""
    found = complete_checkpoints(save_dir)
    names = {child.name[1:].split(".", 1)[0] for child in save_dir.glob(".checkpoint-*.*")}
    for name in names:  # what interrupted writes left, also of steps never written since
        if _NAME.match(name):
            clean_stale(save_dir / name)
    if keep is None:
        return
    keep_steps = {step for step, _ in found[-keep:]} | {best_step}
    for step, folder in reversed(found):  # the newest verified one: the one a resume would take
        if problem(folder) is None:
            keep_steps.add(step)
            break
    for step, folder in found:
        if step not in keep_steps:
            shutil.rmtree(folder, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """``path`` itself when it is a checkpoint (refused when its files differ from its manifest), else the newest
    verified checkpoint inside it, with ``"NAME: why"`` for each newer one skipped."""
    folder = Path(path).expanduser()
    recover(folder)
    if (folder / STATE_JSON).is_file():
        why = problem(folder)
        if why is not None:
            raise CheckpointError(f"{folder} cannot be resumed from: {why}")
        return folder, []
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint at {folder}")
    skipped: list[str] = []
    for _, candidate in reversed(complete_checkpoints(folder)):  # newest first: older ones are not even hashed
        why = problem(candidate)
        if why is None:
            return candidate, skipped[::-1]
        skipped.append(f"{candidate.name}: {why}")
    detail = f" ({'; '.join(skipped[::-1])})" if skipped else ""
    raise CheckpointError(f"{folder} holds no complete checkpoint (checkpoint-NNNNNN folders with {STATE_JSON} "
                          f"whose files match their {MANIFEST}){detail}")


def read_checkpoint(path: str | os.PathLike
                    ) -> tuple[Path, dict, dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """(folder, state, state tensors, adapter tensors without peft's prefix, newer checkpoints skipped and why) of
    a checkpoint, or a one-line error."""
    from safetensors.torch import load_file

    from ...adapters.io import PREFIX, WEIGHTS

    folder, skipped = resolve_checkpoint(path)
    try:
        state = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))
        weights = load_file(str(folder / ADAPTER / WEIGHTS))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder} is not a readable checkpoint: {first_line(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{folder} was written in checkpoint format "
                              f"{state.get('format') if isinstance(state, dict) else None}; "
                              f"this lora_nb reads format {FORMAT}")
    return folder, state, tensors, {k.removeprefix(PREFIX): v for k, v in weights.items()}, skipped


def missing_state(state: dict, tensors: dict[str, torch.Tensor]) -> list[str]:
    """The parts of a run's state a checkpoint lacks (optimizer tensors, loss scaler, RNG states): without them a
    resumed run cannot repeat the interrupted one."""
    missing = []
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict) or "param_groups" not in optimizer or (
            state.get("step", 0) > 0 and not any(k.startswith("optimizer.") for k in tensors)):
        missing.append("the optimizer's state (AdamW moments)")
    if "scaler" not in state:
        missing.append("the loss scaler's state")
    if not isinstance(state.get("rng"), dict) or not {"rng.torch", "rng.numpy"} <= tensors.keys():
        missing.append("the RNG states")
    return missing


# ------------------------------------------------------------------ optimizer state as tensors + JSON


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW's state dict split into tensors (``optimizer.<index>.<key>``) and JSON (groups, plain values)."""
    sd = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Load what ``optimizer_to_files`` wrote into ``optimizer`` (same parameters, same groups)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in meta["plain"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = meta["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError("the checkpoint's optimizer has other parameter groups than this run "
                              "(a different adapter, or `lr_ratio=…` given in one run only)")
    optimizer.load_state_dict({"state": state, "param_groups": groups})
