"""Save and load adapters in peft's format: atomic saves, loads verified before the model is touched.

A saved adapter is a folder ``adapter_config.json`` + ``adapter_model.safetensors`` (what
``peft.PeftModel.from_pretrained`` reads) + ``lora_nb_record.json`` (how the adapter was made: its
options and a summary of its training runs). ``load`` reads and checks everything first — config,
tensors (readable, finite), every key and shape the model needs, computed by peft itself on a
meta-device skeleton of the model — and only then adds the adapter. Pickle weights
(``adapter_model.bin``) are refused unless ``allow_pickle=True``, and are then read with
``torch.load(weights_only=True)``, which runs no code. A loaded adapter is trainable (peft's default
is frozen; in a notebook, loading to continue training is the common case): pass ``trainable=False``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ...errors import AdapterError, AdapterFileError, FileWriteError, LoraNBWarning, first_line
from .. import registry
from ..files import MANIFEST, atomic_folder, recover, verify, write_manifest
from ..interrupts import deferred_interrupts
from ..paths import output_folder
from . import switch
from .atomic import guarded
from .inject import inject
from .keys import adapter_state_dict, fill_adapter, mismatch
from .options import AttachOptions
from .targets import named_modules
from .verify import expected_shapes

CONFIG, WEIGHTS, PICKLE, RECORD = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin",
                                   "lora_nb_record.json")
PREFIX = "base_model.model."


# ---------------------------------------------------------------- save


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-friendly summary: scalars kept, long lists shortened to length, first and last."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict) and depth < 4:
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 4:
        if len(value) > 20:
            return {"length": len(value), "first": _jsonable(value[0], depth + 1),
                    "last": _jsonable(value[-1], depth + 1)}
        return [_jsonable(v, depth + 1) for v in value]
    return str(value)


def run_record(session, adapter: str) -> dict:
    """What ``lora_nb_record.json`` holds for ``adapter``."""
    from ...version import __version__
    from .switch import strength

    record = session.records.get(adapter, {})
    return {
        "lora_nb_version": __version__,
        "adapter": adapter,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_type": type(session.model).__name__,
        "options": _jsonable(record.get("options", {})),
        "runs": _jsonable(list(record.get("runs", []))),
        "strength_when_saved": strength(session.model, adapter),  # the files hold the update at strength 1
    }


def _write(session, adapter: str, staging: Path) -> None:
    """peft's config (moved up from the sub-folder peft uses for non-default names), the adapter's tensors
    selected by exact name segments (peft's own selection mixes up names like `lora` and `lora_A`), the record."""
    from safetensors.torch import save_file

    out = staging / ".peft"
    session.peft.save_pretrained(str(out), selected_adapters=[adapter], save_embedding_layers=False)
    src = out if adapter == "default" else out / adapter
    os.replace(src / CONFIG, staging / CONFIG)
    shutil.rmtree(out)
    tensors = {PREFIX + k: v for k, v in adapter_state_dict(session.model, adapter).items()}
    save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
    (staging / RECORD).write_text(json.dumps(run_record(session, adapter), indent=2))


def write_adapter(model: Any, adapter: str, folder: Path) -> None:
    """Write ``adapter``'s files and their manifest into the existing empty ``folder`` (a checkpoint's ``adapter/``,
    inside the checkpoint's own staging folder)."""
    _write(registry.require(model), adapter, folder)
    write_manifest(folder, "adapter")


def save(model: Any, path: str | os.PathLike, adapter: str | None = None, overwrite: bool = False) -> Path:
    """Save ``adapter`` (default: active) to folder ``path`` in PEFT format, atomically; returns the path.

    The files are written beside ``path`` with a manifest (SHA-256 per file) and put in place in one step: a kill,
    a Ctrl-C or a full disk leaves the previous save or the new one, never a mix. A folder that holds a saved
    adapter already is replaced only with ``overwrite=True``."""
    session = registry.require(model)
    adapter = session.check_adapter(adapter) if adapter is not None else session.active
    target = output_folder(path, "save path", marker=CONFIG, holds="a saved adapter", overwrite=overwrite)
    try:
        with atomic_folder(target, "adapter") as staging:
            _write(session, adapter, staging)
    except FileWriteError as exc:
        raise AdapterFileError(f"saving to {target} failed ({getattr(exc, 'cause', exc)}); any previous save is "
                               "intact") from None
    return target


# ---------------------------------------------------------------- load


def _folder(path: str | os.PathLike) -> Path:
    folder = Path(path).expanduser()
    recover(folder)  # a save killed half-way through a journaled swap: finished (or undone) first
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise AdapterFileError(f"no adapter folder at {folder}")
    if not (folder / CONFIG).exists():
        raise AdapterFileError(f"{folder} has no {CONFIG}; is it a saved adapter?")
    return folder


def check_files(folder: Path) -> None:
    """Refuse an adapter folder whose files differ from its manifest (one line naming the file); a folder without
    one (saved by peft, or by lora_nb before manifests) is loaded unchecked, said once. Files the manifest lists
    that are gone are left to the checks of what ``load`` reads (a missing record is harmless)."""
    found = verify(folder)
    differing = [name for name in found.differing if (folder / name).exists()]
    if differing:
        more = f" (and {len(differing) - 1} more)" if len(differing) > 1 else ""
        raise AdapterFileError(f"{folder / differing[0]}{more} differs from what was saved (its SHA-256 or size "
                               f"does not match {MANIFEST}): changed or corrupted on disk; refusing to load")
    if not found.has_manifest:
        warnings.warn(LoraNBWarning(f"{folder} has no {MANIFEST} (saved by peft or an older lora_nb): its files "
                                    "are loaded unchecked"), stacklevel=3)


def _read_config(folder: Path):
    from peft import LoraConfig

    try:
        raw = json.loads((folder / CONFIG).read_text())
        if str(raw.get("peft_type", "LORA")).upper() != "LORA":
            raise AdapterFileError(f"{folder / CONFIG} describes a {raw.get('peft_type')} adapter, not LoRA")
        config = LoraConfig.from_pretrained(str(folder))
    except AdapterFileError:
        raise
    except Exception as exc:
        raise AdapterFileError(f"{folder / CONFIG} is not a valid LoRA config: {first_line(exc)}") from None
    if getattr(config, "target_parameters", None):
        raise AdapterFileError(f"{folder}: adapters with target_parameters are not supported by lora_nb.load; "
                               "use peft.PeftModel.from_pretrained")
    return config


def _read_tensors(folder: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights, pickled = folder / WEIGHTS, folder / PICKLE
    if weights.exists():
        try:
            with deferred_interrupts():  # a Ctrl-C inside safetensors' reader can surface as another error
                return load_file(str(weights))
        except Exception as exc:
            raise AdapterFileError(f"{weights} is not a readable safetensors file (truncated or corrupt?): "
                                   f"{first_line(exc)}") from None
    if not pickled.exists():
        raise AdapterFileError(f"{folder} has no {WEIGHTS}")
    if not allow_pickle:
        raise AdapterFileError(f"{pickled} is a pickle, which can run code when loaded; refused (convert it to "
                               "safetensors, or pass `allow_pickle=True` if you trust its source)")
    try:
        tensors = torch.load(str(pickled), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdapterFileError(f"{pickled} is not a plain tensor file (weights_only refused it): "
                               f"{first_line(exc)}") from None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise AdapterFileError(f"{pickled} does not hold a dict of tensors")
    return tensors


def _check_finite(tensors: dict[str, torch.Tensor], folder: Path) -> None:
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise AdapterFileError(f"{folder}: {len(bad)} tensor(s) hold NaN or inf (e.g. {bad[0]}); refusing to load")


def _prepare(model, config, name: str | None, session) -> tuple[str, Any]:
    from .custom_layers import register

    name = name or "default"
    AttachOptions(name=name)  # the same naming rules as attach
    register(config, [m for _, m in named_modules(model)])  # Linear/Conv subclasses: lora_nb's LoRA layers
    if session is not None and name in session.adapters:
        raise AdapterError(f"adapter `{name}` already exists on this model; load it under another name (`name=…`)")
    config.init_lora_weights = False  # the file's weights replace the init; pissa/olora inits would edit the base
    return name, config


def _inject(model, session, config, name: str):
    """Add an empty adapter ``name``; returns the session."""
    if session is None:
        return inject(model, None, config, name)
    switch.unmerge_first(session)  # exactly; peft's add_adapter would unmerge by subtraction
    inject(model, session, config, name)
    return session


def _saved(folder: Path) -> dict:
    """The saved record (``lora_nb_record.json``), or ``{}`` for a folder saved by peft alone."""
    try:
        saved = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _not_for(model, folder: Path, problem: str) -> AdapterFileError:
    """One line: the model the adapter was saved from (its record, or peft's base model name) and this one."""
    config = json.loads((folder / CONFIG).read_text())
    origin = _saved(folder).get("model_type") or config.get("base_model_name_or_path")
    this = type(model).__name__
    if origin and origin != this:
        return AdapterFileError(f"{folder} holds an adapter saved from a {origin}; this model is a {this}: {problem}")
    return AdapterFileError(f"{folder} does not fit this {this}: {problem}")


def _record(folder: Path) -> dict:
    saved = _saved(folder)
    options = dict(saved.get("options") or {})
    options["loaded_from"] = str(folder)
    return {"options": options, "runs": list(saved.get("runs") or [])}


def load(model: Any, path: str | os.PathLike, name: str | None = None, allow_pickle: bool = False,
         trainable: bool = True) -> str:
    """Load a PEFT-format adapter from ``path`` as ``name`` (default ``default``), verified first; returns the name.

    The loaded adapter becomes the active one and is trainable unless ``trainable=False``.
    """
    folder = _folder(path)
    config = _read_config(folder)
    tensors = _read_tensors(folder, allow_pickle)
    _check_finite(tensors, folder)
    model = registry.as_module(model)
    session = registry.find(model)
    if session is not None:
        session.ensure_idle("load an adapter")
        session.verify()
    else:
        registry.check_unowned(model)
    name, config = _prepare(model, config, name, session)
    tensors = {k.removeprefix(PREFIX): v for k, v in tensors.items()}
    try:
        expected = expected_shapes(model, config)
    except AdapterFileError as exc:
        raise _not_for(model, folder, str(exc)) from None
    if expected is not None and (problem := mismatch(tensors, expected)):
        raise _not_for(model, folder, problem)
    check_files(folder)  # after the checks that say more (unreadable, NaN, misfit): a bit flip that passes them
    config.inference_mode = not trainable
    with guarded(model):  # Ctrl-C held back; a failure half-way (or a misfit) leaves the model as it was
        session = _inject(model, session, config, name)
        _fill(session, name, tensors, folder)
        switch.turn_on(session, name)
        if not trainable:  # peft makes the active adapter trainable; frozen was asked for
            session.peft.set_requires_grad(name, requires_grad=False)
        session.records[name] = _record(folder)
    session.notify("load")
    return name


def _fill(session, name: str, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy the tensors into the new adapter ``name``, each to the parameter whose file key it has."""
    problem = fill_adapter(session.model, name, tensors)
    if problem:
        raise AdapterFileError(f"{folder} does not fit this model: {problem}")
