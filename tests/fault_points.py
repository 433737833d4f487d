"""Fault injection for folder writes: count the file-system steps of an operation, then stop it before each one.

``dry_run(fn)`` runs ``fn`` in a forked child under an audit hook and returns the steps it took (opens for writing,
renames, removals, folder creations, and the exchange of two folders (``renameat2`` through ctypes raises no
audit event of its own: lora_nb raises one just before it, see folder_swap)). ``kill_before(fn, n)`` runs ``fn`` in a
fresh forked child that ``os._exit``s just before step ``n`` (a kill -9 at that instant, as far as the files on
disk can tell). ``interrupt_before(n, how)`` arms the hook of the current process to raise ``KeyboardInterrupt``
(``how="raise"``) or to send itself SIGINT (``how="signal"``, what Ctrl-C does) before step ``n``. Audit hooks
cannot be removed, so the in-process variant is meant for a forked child too. Fork only with torch on one
thread (``one_thread``): a child forked from a process whose OpenMP pool ran can hang in its first parallel op.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

STEPS = {"os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.mkdir", "os.chmod",
         "os.truncate", "os.link", "os.symlink", "shutil.move", "shutil.copyfile", "lora_nb.exchange"}
KILLED, DONE, FAILED = 71, 72, 73
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _is_step(event: str, args: tuple) -> bool:
    if event == "open":
        _, mode, flags = args
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
    return event in STEPS


class _Hook:
    def __init__(self) -> None:
        self.count, self.at, self.action, self.seen = 0, 0, None, []
        self.on = False

    def __call__(self, event: str, args: tuple) -> None:
        if not self.on or not _is_step(event, args):
            return
        self.count += 1
        if len(self.seen) < 2000:
            self.seen.append(f"{event} {os.path.basename(str(args[0])) if args else ''}")
        if self.count == self.at and self.action is not None:
            action, self.action = self.action, None
            action()


_hook: _Hook | None = None


def _installed() -> _Hook:
    global _hook
    if _hook is None:
        _hook = _Hook()
        sys.addaudithook(_hook)
    return _hook


def _child(fn: Callable[[], Any], write: int, at: int) -> None:
    """In a forked child: run ``fn`` counting steps, dying before step ``at`` (0: never); report and exit."""
    code = FAILED
    try:
        hook = _installed()
        hook.count, hook.seen, hook.at, hook.on = 0, [], at, True
        hook.action = (lambda: os._exit(KILLED)) if at else None
        result = fn()
        hook.on = False
        os.write(write, json.dumps({"steps": hook.seen, "result": result}).encode())
        code = DONE
    except BaseException:
        os.write(write, json.dumps({"error": traceback.format_exc()}).encode())
    finally:
        os._exit(code)


def forked(fn: Callable[[], Any], at: int = 0) -> tuple[int, dict]:
    """Run ``fn`` in a forked child (dying before step ``at`` when given); (exit code, what it reported)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(fn, write, at)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    return os.waitstatus_to_exitcode(status), (json.loads(data) if data else {})


def dry_run(fn: Callable[[], Any]) -> list[str]:
    code, report = forked(fn)
    assert code == DONE, report.get("error")
    return report["steps"]


def kill_before(fn: Callable[[], Any], step: int) -> int:
    """Exit code of a child that ran ``fn`` and was killed before ``step`` (DONE when it had fewer steps)."""
    code, report = forked(fn, step)
    assert code in (KILLED, DONE), report.get("error")
    return code


def interrupt_before(step: int, how: str) -> None:
    """Arm this process's hook: before its ``step``-th step from now, a ``KeyboardInterrupt`` or a real SIGINT."""
    hook = _installed()
    hook.count, hook.seen, hook.at, hook.on = 0, [], step, True
    if how == "raise":
        def action() -> None:
            raise KeyboardInterrupt
    else:
        def action() -> None:
            signal.raise_signal(signal.SIGINT)
    hook.action = action


def disarm() -> int:
    """Stop counting; the number of steps counted since ``interrupt_before``."""
    hook = _installed()
    hook.on, hook.action = False, None
    return hook.count


@contextmanager
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def small_tmpfs(folder: Any, size: str = "256k") -> Iterator[Any]:
    """A tmpfs of ``size`` mounted at ``folder`` (a real full disk: ENOSPC), or None where mounting is not allowed."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Any) -> Any:
    """Fill the file system of ``folder`` with one file until it is full; returns that file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: nothing left to fail at close
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError:
                pass
    return filler
