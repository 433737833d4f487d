"""Training checkpoints on disk: written atomically, read back verified, pruned to the newest few.

A checkpoint is a folder ``checkpoint-000120`` holding

- ``adapter/``: the adapter in PEFT format (``lora_nb.core.adapters.io.save``);
- ``state.safetensors``: every tensor of the run's state (AdamW moments and steps, RNG states);
- ``state.json``: everything else (step, settings, history, optimizer groups, data position,
  RNG states that are plain numbers). It is written last: a folder without it is not a checkpoint.

No pickle anywhere. A checkpoint is built in a hidden temporary folder next to its final place and
renamed into place (``adapters.io.replace_folder``) only once complete, so a crash or a full disk mid-write leaves
every earlier checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ....errors import CheckpointError, first_line

STATE_JSON, STATE_TENSORS, ADAPTER = "state.json", "state.safetensors", "adapter"
FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def write_checkpoint(model: Any, adapter: str, folder: Path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Write one checkpoint to ``folder`` atomically (temp folder + rename); returns ``folder``."""
    from safetensors.torch import save_file

    from ...adapters.io import replace_folder, save

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.writing-", dir=folder.parent))
    try:
        save(model, staging / ADAPTER, adapter)
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(staging / STATE_TENSORS))
        (staging / STATE_JSON).write_text(json.dumps({"format": FORMAT, **state}))
        replace_folder(staging, folder)  # the same step written again (a resumed run): the old one goes after
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def complete_checkpoints(save_dir: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints in ``save_dir`` as (step, folder), oldest first."""
    if not save_dir.is_dir():
        return []
    found = []
    for child in save_dir.iterdir():
        match = _NAME.match(child.name)
        if match and (child / STATE_JSON).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def prune(save_dir: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (and stale temporary folders)."""
    for child in save_dir.glob(".checkpoint-*.writing-*"):
        shutil.rmtree(child, ignore_errors=True)
    for child in save_dir.glob(".checkpoint-*.old-*"):  # a replaced folder left by a crash, once its successor exists
        if (save_dir / child.name[1:].partition(".old-")[0] / STATE_JSON).is_file():
            shutil.rmtree(child, ignore_errors=True)
    if keep is None:
        return
    for _, folder in complete_checkpoints(save_dir)[:-keep]:
        shutil.rmtree(folder, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a checkpoint, else the newest complete checkpoint inside it."""
    folder = Path(path).expanduser()
    if (folder / STATE_JSON).is_file():
        return folder
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint at {folder}")
    found = complete_checkpoints(folder)
    if not found:
        raise CheckpointError(f"{folder} holds no complete checkpoint (checkpoint-NNNNNN folders with {STATE_JSON})")
    return found[-1][1]


def read_checkpoint(path: str | os.PathLike) -> tuple[Path, dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(folder, state, state tensors, adapter tensors without peft's prefix) of a checkpoint, or a one-line error."""
    from safetensors.torch import load_file

    from ...adapters.io import PREFIX, WEIGHTS

    folder = resolve_checkpoint(path)
    try:
        state = json.loads((folder / STATE_JSON).read_text())
        tensors = load_file(str(folder / STATE_TENSORS))
        weights = load_file(str(folder / ADAPTER / WEIGHTS))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{folder} is not a readable checkpoint: {first_line(exc)}") from None
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{folder} was written in checkpoint format {state.get('format')}; "
                              f"this lora_nb reads format {FORMAT}")
    return folder, state, tensors, {k.removeprefix(PREFIX): v for k, v in weights.items()}


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
