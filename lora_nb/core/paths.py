"""The one check of a folder a verb will write (save, export, checkpoints), made before anything is written.

Refused, one line each: no path ('' or blank), the working folder or one of its parents (``.``, ``..``, ``/``;
replacing it would leave the kernel in a deleted folder), an existing file, an existing folder that holds
something else than what the verb writes, a path under a file, a name longer than the file system allows, and a
place the process cannot create a folder in (not writable, or impossible such as ``/proc/x``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import PathError, a_kind, first_line

NAME_MAX = 255  # bytes per path component on Linux, macOS and Windows file systems
PROBE = ".lora_nb-probe-"  # `.lora_nb-probe-<pid>-XXXXXXXX`: made and removed at once to see that folders can be made


def _absolute(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise PathError(f"{what} must be a folder path; got {a_kind(path)}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise PathError(f"{what} must be a folder path; got `{text!s}`")
    if "\0" in text:
        raise PathError(f"{what} contains a NUL character")
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise PathError(f"{what} `{text}` cannot be resolved: {first_line(exc)}") from None


def _nearest_existing(target: Path) -> Path:
    for folder in (target, *target.parents):
        if folder.exists():
            return folder
    return Path(target.anchor)


def _can_create_in(folder: Path) -> str | None:
    """Why a folder cannot be created in ``folder`` (None when it can): a probe folder is made and removed."""
    if not folder.is_dir():
        return f"{folder} is a file"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    _remove_stale_probes(folder)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f"{PROBE}{os.getpid()}-", dir=folder))
    except OSError as exc:
        return f"cannot create a folder in {folder} ({first_line(exc)})"
    return None


def _remove_stale_probes(folder: Path) -> None:
    """Probe folders a killed process left (its id in the name, no longer running) are removed."""
    for probe in folder.glob(f"{PROBE}*"):
        pid = probe.name[len(PROBE):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            try:
                os.rmdir(probe)
            except OSError:
                pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def output_folder(path: Any, what: str, marker: str | None = None, holds: str = "",
                  overwrite: bool = True) -> Path:
    """The absolute folder ``path`` a verb will write, or a one-line ``PathError`` saying why it cannot.

    ``what`` names the path in messages (``save path``, ``--save-dir``). ``marker``: a file that shows an existing,
    non-empty folder holds an earlier result of the same verb (``holds``: "an adapter"), which may be replaced;
    other non-empty folders are refused; with ``overwrite=False`` that earlier result is refused too (the caller
    replaces it only when asked). ``marker=None``: any existing folder may be written into (checkpoints add their
    own sub-folders).
    """
    target = _absolute(path, what)
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise PathError(f"{what} `{path}` is the working folder or one of its parents ({target}); give a new "
                        "folder's name, e.g. `./adapter`")
    long = next((part for part in target.parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        raise PathError(f"{what}: the name `{long[:40]}…` is longer than {NAME_MAX} bytes")
    if target.exists() and not target.is_dir():
        raise PathError(f"{what} {target} is a file; give a folder path")
    if marker is not None and target.is_dir() and any(target.iterdir()) and not (target / marker).exists():
        raise PathError(f"{what} {target} exists and is not {holds or 'such a'} folder; choose a new or empty path")
    if marker is not None and not overwrite and (target / marker).exists():
        raise PathError(f"{what} {target} already holds {holds or 'an earlier result'}; pass `overwrite=True` to "
                        "replace it (atomically: the old one stays until the new one is complete)")
    for folder in {_nearest_existing(target.parent), *([target] if target.exists() else [])}:
        problem = _can_create_in(folder)
        if problem is not None:
            raise PathError(f"{what} {target}: {problem}")
    return target
