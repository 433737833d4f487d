"""The one way lora_nb writes a folder (adapters, checkpoints, exports, data cache): all or nothing, checked by hash.

``atomic_folder(target, kind)`` yields an empty staging folder beside ``target``; the caller writes every file
into it. When the block ends normally every file is flushed to disk (fsync), a manifest ``lora_nb_manifest.json``
is written (SHA-256 and size per file), and the staging folder replaces ``target`` in one step
(``folder_swap.swap``): at every instant ``target`` holds the old complete folder or the new complete one. When
the block raises, the staging folder is removed and ``target`` is untouched; a full disk, a lost mount or a
safetensors write error becomes one ``FileWriteError`` line. A kill leaves at most a hidden staging folder,
removed by the next write there. ``verify(folder)`` re-hashes a folder against its manifest.

Not covered: a power loss on a file system or disk that ignores fsync, network file systems (their renames and
fsyncs are not atomic or durable in the same way), and files changed on purpose together with their manifest.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FileWriteError, first_line
from . import folder_swap
from .folder_swap import recover

MANIFEST = "lora_nb_manifest.json"
FORMAT = 1
STAGING = ".lora_nb-staging-"  # `.NAME.lora_nb-staging-<pid>-XXXXXXXX`
_CHUNK = 1 << 20
_active: set[str] = set()  # staging folders this process is writing right now
_active_lock = threading.Lock()

__all__ = ["MANIFEST", "Verified", "atomic_folder", "folder_kind", "recover", "verify", "write_error"]


@dataclass(frozen=True)
class Verified:
    """What ``verify`` found: ``ok`` when the folder has a readable manifest and every file it lists is there with
    its size and SHA-256; ``differing``: the listed files that are missing or differ (the manifest itself when it
    is unreadable)."""

    ok: bool
    has_manifest: bool
    differing: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- hashing


def _hash_and_sync(path: Path) -> tuple[str, int]:
    """SHA-256 and size of ``path``, read once; the file is fsynced on the way (its data reaches the disk)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest(), size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.name != MANIFEST)


def write_manifest(folder: Path, kind: str) -> None:
    """Flush every file and sub-folder of ``folder`` to disk and write its manifest (flushed too)."""
    from ..version import __version__

    entries = {}
    for path in _files(folder):
        sha, size = _hash_and_sync(path)
        entries[path.relative_to(folder).as_posix()] = {"sha256": sha, "bytes": size}
    manifest = {"format": FORMAT, "kind": kind, "written_by": f"lora_nb {__version__}", "files": entries}
    with open(folder / MANIFEST, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        folder_swap.fsync_folder(sub)
    folder_swap.fsync_folder(folder)


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def folder_kind(folder: Path) -> str | None:
    """The ``kind`` a folder's manifest names, or None (no manifest, unreadable, or not a folder)."""
    manifest = _read_manifest(Path(folder)) if Path(folder).is_dir() else None
    kind = manifest.get("kind") if manifest else None
    return kind if isinstance(kind, str) else None


def _matches(folder: Path, rel: str, entry: object) -> bool:
    path = folder / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not isinstance(entry, dict):
        return False
    try:
        return path.stat().st_size == entry.get("bytes") and _sha256(path) == entry.get("sha256")
    except OSError:
        return False


def verify(folder: Path) -> Verified:
    """Every file the manifest of ``folder`` lists, re-hashed (an interrupted swap at ``folder`` is finished first)."""
    folder = Path(folder)
    try:
        recover(folder)
    except OSError:
        pass  # a read-only place: the folder is checked as it is
    if not (folder / MANIFEST).is_file():
        return Verified(ok=False, has_manifest=False)
    manifest = _read_manifest(folder)
    if manifest is None:
        return Verified(ok=False, has_manifest=True, differing=[MANIFEST])
    differing = [rel for rel, entry in sorted(manifest["files"].items()) if not _matches(folder, rel, entry)]
    return Verified(ok=not differing, has_manifest=True, differing=differing)


# ---------------------------------------------------------------- writing


def write_error(target: Path, exc: BaseException, existed: bool) -> FileWriteError:
    """The one line for a write that failed: the path, the cause, and what is left."""
    left = "the previous folder there is intact" if existed else "nothing was left there"
    error = FileWriteError(f"writing {target} failed ({first_line(exc)}); {left}")
    error.cause = first_line(exc)  # for callers that word their own line
    return error


def _is_write_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, SafetensorError)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _stale(path: Path, target: Path) -> bool:
    """Whether ``path`` beside ``target`` is a leftover of an interrupted write (never a complete folder in use)."""
    rest = path.name[len(target.name) + 1:]
    if rest.startswith(STAGING):
        pid = rest[len(STAGING):].partition("-")[0]
        if not pid.isdigit():
            return True
        with _active_lock:
            mine = str(path) in _active
        return not mine and (int(pid) == os.getpid() or not _alive(int(pid)))
    if rest == folder_swap.JOURNAL + ".tmp":  # a journal killed before it was complete: its swap never began
        return True
    if rest.startswith(folder_swap.OLD):  # the old folder of a finished journaled swap
        return True
    if rest.startswith(".old-"):  # earlier releases' old folder: only once the target is back (recover)
        return target.exists()
    return rest.startswith((".saving-", ".writing-"))


def clean_stale(target: Path) -> None:
    """Remove the staging folders that interrupted writes left beside ``target`` (none while a swap journal there
    is unfinished: it may name one of them)."""
    if folder_swap.journal_path(target).exists():
        return
    try:
        leftovers = [p for p in target.parent.glob(f".{glob.escape(target.name)}.*") if _stale(p, target)]
    except OSError:
        return
    for path in leftovers:
        _remove(path)


def _remove(path: Path) -> None:
    """Remove a folder with its contents, or a file or link (a replaced target may have been a link)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _staging(target: Path) -> Path:
    """A new empty folder beside ``target``, made like any folder (the umask's permissions, not mkdtemp's 0700)."""
    while True:
        staging = target.parent / f".{target.name}{STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            break
        except FileExistsError:
            continue
    with _active_lock:
        _active.add(str(staging))
    return staging


def _prepare(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        recover(target)
        clean_stale(target)
        return _staging(target)
    except OSError as exc:
        raise write_error(target, exc, os.path.lexists(target)) from None


@contextmanager
def atomic_folder(target: Path, kind: str) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``target`` in one step when the block ends without error.

    On an error inside the block the staging folder is removed and ``target`` is untouched; an ``OSError`` or
    safetensors error becomes a one-line ``FileWriteError``; ``KeyboardInterrupt`` and bugs propagate after the
    cleanup. A folder the swap replaced is removed after it.
    """
    target = Path(target).absolute()
    staging = _prepare(target)
    existed = os.path.lexists(target)
    try:
        yield staging
        write_manifest(staging, kind)
        folder_swap.swap(staging, target)  # staging's path now holds the old folder, or nothing
    except BaseException as exc:
        _discard(target, staging)
        if _is_write_error(exc):
            raise write_error(target, exc, existed) from None
        raise
    finally:
        with _active_lock:
            _active.discard(str(staging))
    _remove(staging)


def _discard(target: Path, staging: Path) -> None:
    """After a failure: finish a journaled swap that got halfway (its new folder was complete), then drop staging."""
    try:
        recover(target)
    except OSError:
        pass
    if not folder_swap.journal_path(target).exists():  # else the journal may name staging as the new folder
        _remove(staging)
