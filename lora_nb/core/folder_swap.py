"""Put a complete folder in place of another in one step, and finish a swap a kill interrupted.

``swap(new, target)``: when ``target`` does not exist, a plain rename. Otherwise the two folders are exchanged by
the kernel in one step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``): afterwards
``new``'s path holds the old folder, which the caller removes. Where the system or the file system cannot exchange,
a journaled swap: a journal ``.NAME.lora_nb-swap.json`` beside ``target`` names the old and new folders, then
``target`` is renamed aside and ``new`` renamed into place; ``recover(target)`` (run by the next write, verify or
load of that path) completes a swap the journal shows unfinished, or puts the old folder back. Interrupts (SIGINT)
are deferred across the swap in the main thread and delivered right after it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import platform
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from .interrupts import deferred_interrupts

JOURNAL = ".lora_nb-swap.json"  # beside target: `.NAME.lora_nb-swap.json`
OLD = ".lora_nb-old-"  # the old folder of a journaled swap: `.NAME.lora_nb-old-XXXXXXXX`
_AT_FDCWD, _RENAME_EXCHANGE, _RENAME_SWAP = -100, 2, 2
_SYSCALL_RENAMEAT2 = {"x86_64": 316, "amd64": 316, "aarch64": 276, "arm64": 276}
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _checked(result: int, a: bytes, b: bytes) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fsdecode(a), None, os.fsdecode(b))


def _find_exchange() -> Callable[[bytes, bytes], None] | None:
    """The system's exchange of two paths in one step, or None where there is none."""
    libc = _libc()
    if libc is None:
        return None
    if sys.platform.startswith("linux"):
        fn = getattr(libc, "renameat2", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            return lambda a, b: _checked(fn(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE), a, b)
        number = _SYSCALL_RENAMEAT2.get(platform.machine().lower())
        if number is None:
            return None
        call = libc.syscall
        call.restype = ctypes.c_long
        return lambda a, b: _checked(call(ctypes.c_long(number), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(a),
                                          ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(b),
                                          ctypes.c_uint(_RENAME_EXCHANGE)), a, b)
    if sys.platform == "darwin":
        fn = getattr(libc, "renamex_np", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            return lambda a, b: _checked(fn(a, b, _RENAME_SWAP), a, b)
    return None


EXCHANGE: Callable[[bytes, bytes], None] | None = _find_exchange()  # None: the journaled swap (tests set it so)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(fd)


def journal_path(target: Path) -> Path:
    return target.parent / f".{target.name}{JOURNAL}"


def swap(new: Path, target: Path) -> bool:
    """Put the complete folder ``new`` at ``target``; True when ``new``'s path now holds the old folder."""
    with deferred_interrupts():
        if not os.path.lexists(target):
            os.rename(new, target)
            fsync_folder(target.parent)
            return False
        if EXCHANGE is not None:
            sys.audit("lora_nb.exchange", str(new), str(target))  # a step audit hooks see (ctypes calls raise none)
            try:
                EXCHANGE(os.fsencode(new), os.fsencode(target))
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
            else:
                fsync_folder(target.parent)
                return True
        _journaled_swap(new, target)
        return False


def _write_journal(target: Path, old: Path, new: Path) -> None:
    journal = journal_path(target)
    scratch = journal.with_name(journal.name + ".tmp")
    with open(scratch, "w") as handle:
        json.dump({"old": old.name, "new": new.name}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, journal)
    fsync_folder(target.parent)


def _journaled_swap(new: Path, target: Path) -> None:
    old = target.parent / f".{target.name}{OLD}{uuid.uuid4().hex[:8]}"
    _write_journal(target, old, new)
    os.rename(target, old)
    os.rename(new, target)
    fsync_folder(target.parent)
    recover(target)  # removes the journal, then the old folder


def recover(target: Path) -> None:
    """Complete (or roll back) a swap at ``target`` that a kill interrupted; a no-op when none was."""
    target = Path(target)
    journal = journal_path(target)
    try:
        names = json.loads(journal.read_text())
        old, new = target.parent / names["old"], target.parent / names["new"]
    except FileNotFoundError:
        return _recover_legacy(target)
    except (OSError, ValueError, KeyError, TypeError):  # unreadable: nothing can be inferred; leave it for a person
        return
    with deferred_interrupts():
        if not os.path.lexists(target):
            _first_rename((new, old), target)  # forward (new was complete before the journal was written), or back
        if not os.path.lexists(target):
            return  # neither could be put back now: the journal stays for the next touch
        journal.unlink()
        fsync_folder(target.parent)
    if old.is_dir() and os.path.lexists(target):
        shutil.rmtree(old, ignore_errors=True)


def _first_rename(sources: tuple[Path, ...], target: Path) -> None:
    """Rename the first of ``sources`` that is a folder and can be renamed to ``target``."""
    for source in sources:
        if source.is_dir():
            try:
                os.rename(source, target)
            except OSError:
                continue
            fsync_folder(target.parent)
            return


def _recover_legacy(target: Path) -> None:
    """Earlier releases renamed an old folder aside (``.NAME.old-XXXXXXXX``) before renaming the new one in; a kill
    between the two left no folder at ``target``: the old one goes back."""
    if os.path.lexists(target) or not target.parent.is_dir():
        return
    aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if aside and aside[-1].is_dir():
        with deferred_interrupts():
            os.rename(aside[-1], target)
            fsync_folder(target.parent)
