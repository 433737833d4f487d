"""The one folder writer (lora_nb.core.files): all or nothing, a manifest of SHA-256 per file, stale staging removed,
interrupted journaled swaps finished by the next touch, Ctrl-C deferred across the swap."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lora_nb.core import files, folder_swap
from lora_nb.core.files import MANIFEST, atomic_folder, folder_kind, verify
from lora_nb.errors import FileWriteError, LoraNBError


def write(target: Path, content: str, kind: str = "adapter") -> Path:
    with atomic_folder(target, kind) as staging:
        (staging / "a.txt").write_text(content)
        (staging / "sub").mkdir()
        (staging / "sub" / "b.bin").write_bytes(content.encode() * 3)
    return target


@pytest.fixture(params=["exchange", "journaled"])
def swap_kind(request, monkeypatch):
    if request.param == "journaled":
        monkeypatch.setattr(folder_swap, "EXCHANGE", None)
    elif folder_swap.EXCHANGE is None:
        pytest.skip("this system has no exchange of two folders")
    return request.param


def test_a_written_folder_has_its_manifest_and_replaces_the_old_one_whole(tmp_path, swap_kind):
    target = write(tmp_path / "out", "one")
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["format"] == 1 and manifest["kind"] == "adapter" and manifest["written_by"].startswith("lora_nb ")
    assert sorted(manifest["files"]) == ["a.txt", "sub/b.bin"] and manifest["files"]["a.txt"]["bytes"] == 3
    assert verify(target) == files.Verified(ok=True, has_manifest=True, differing=[])
    assert folder_kind(target) == "adapter" and folder_kind(tmp_path) is None and folder_kind(tmp_path / "x") is None
    write(target, "two", kind="checkpoint")
    assert (target / "a.txt").read_text() == "two" and folder_kind(target) == "checkpoint"
    assert os.listdir(tmp_path) == ["out"]  # the old folder removed after the swap, nothing else left


def test_verify_names_every_file_that_differs(tmp_path):
    target = write(tmp_path / "out", "one")
    (target / "a.txt").write_text("oNe")  # same size, other bytes
    os.remove(target / "sub" / "b.bin")
    (target / "extra").write_text("not listed: not checked")
    assert verify(target) == files.Verified(ok=False, has_manifest=True, differing=["a.txt", "sub/b.bin"])
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["files"]["../escape"] = {"sha256": "0" * 64, "bytes": 0}
    (target / MANIFEST).write_text(json.dumps(manifest))
    assert "../escape" in verify(target).differing
    (target / MANIFEST).write_text("{")
    assert verify(target) == files.Verified(ok=False, has_manifest=True, differing=[MANIFEST])
    os.remove(target / MANIFEST)
    assert verify(target) == files.Verified(ok=False, has_manifest=False, differing=[])


@pytest.mark.parametrize("error, raised", [
    (OSError(errno.ENOSPC, "No space left on device"), FileWriteError),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (ValueError("a bug"), ValueError),
])
def test_an_error_inside_leaves_the_target_untouched_and_nothing_beside_it(tmp_path, swap_kind, error, raised):
    target = write(tmp_path / "out", "one")
    with pytest.raises(raised) as info:
        with atomic_folder(target, "adapter") as staging:
            (staging / "a.txt").write_text("half")
            raise error
    assert (target / "a.txt").read_text() == "one" and verify(target).ok and os.listdir(tmp_path) == ["out"]
    if raised is FileWriteError:
        assert str(info.value) == (f"writing {target} failed ([Errno 28] No space left on device); the previous "
                                   "folder there is intact") and isinstance(info.value, LoraNBError)


def test_a_safetensors_error_is_a_one_line_file_write_error(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(FileWriteError, match="nothing was left there") as info:
        with atomic_folder(tmp_path / "new", "checkpoint"):
            raise SafetensorError("Error while serializing: IoError(Os { code: 27, kind: FileTooLarge })")
    assert "\n" not in str(info.value) and os.listdir(tmp_path) == []


def test_a_folder_that_cannot_be_made_is_a_file_write_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileWriteError, match="writing .* failed .*nothing was left there"):
        with atomic_folder(tmp_path / "file" / "out", "adapter"):
            pass


def test_a_kill_between_the_journaled_renames_is_finished_by_the_next_touch(tmp_path):
    """The journaled swap's states after a kill: journal written, old renamed aside, new not yet in place."""
    target = write(tmp_path / "out", "old")
    staging = tmp_path / ".out.lora_nb-staging-1-abcdabcd"
    write(staging, "new")
    aside = tmp_path / ".out.lora_nb-old-12345678"
    folder_swap._write_journal(target, aside, staging)
    os.rename(target, aside)
    assert not target.exists()
    assert verify(target).ok and (target / "a.txt").read_text() == "new"  # forward: the new one was complete
    assert os.listdir(tmp_path) == ["out"]
    write(staging, "newer")
    folder_swap._write_journal(target, aside, staging)
    os.rename(target, aside)
    import shutil

    shutil.rmtree(staging)  # the new folder is gone (removed by hand): back to the old one
    folder_swap.recover(target)
    assert (target / "a.txt").read_text() == "new" and os.listdir(tmp_path) == ["out"]


def test_a_system_that_cannot_exchange_falls_back_to_the_journaled_swap(tmp_path, monkeypatch):
    calls = []

    def unsupported(a: bytes, b: bytes) -> None:
        calls.append((a, b))
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(folder_swap, "EXCHANGE", unsupported)
    target = write(write(tmp_path / "out", "one"), "two")
    assert calls and (target / "a.txt").read_text() == "two" and os.listdir(tmp_path) == ["out"]


def test_stale_staging_is_removed_but_not_a_live_writers(tmp_path):
    """Leftovers of dead processes and of earlier releases go; the staging folder of a process still running
    (another save to the same path right now) stays."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
        names = [f".out.lora_nb-staging-{dead}-aaaaaaaa", f".out.lora_nb-staging-{sleeper.pid}-bbbbbbbb",
                 ".out.saving-cccc", ".out.lora_nb-old-dddddddd", ".other.lora_nb-staging-1-eeeeeeee"]
        for name in names:
            (tmp_path / name).mkdir()
        (tmp_path / ".out.lora_nb-swap.json.tmp").write_text("{")
        write(tmp_path / "out", "one")
        assert sorted(os.listdir(tmp_path)) == sorted(["out", names[1], names[4]])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_writes_from_another_thread_work_and_ctrl_c_waits_for_the_swap(tmp_path, monkeypatch, swap_kind):
    errors = []
    worker = threading.Thread(target=lambda: errors.append(write(tmp_path / "threaded", "t")))
    worker.start()
    worker.join()
    assert errors and (tmp_path / "threaded" / "a.txt").read_text() == "t"
    target = write(tmp_path / "out", "old")
    real_rename, real_exchange = os.rename, folder_swap.EXCHANGE

    def interrupted_rename(a, b):  # Ctrl-C arrives at the very instant of the swap
        signal.raise_signal(signal.SIGINT)
        return (real_exchange or real_rename)(a, b)

    if swap_kind == "exchange":
        monkeypatch.setattr(folder_swap, "EXCHANGE", interrupted_rename)
    else:
        monkeypatch.setattr(os, "rename", lambda a, b: interrupted_rename(a, b) if Path(b) == target
                            else real_rename(a, b))
    with pytest.raises(KeyboardInterrupt):
        write(target, "new")
    monkeypatch.setattr(os, "rename", real_rename)
    assert (target / "a.txt").read_text() == "new" and verify(target).ok  # the swap completed, then the interrupt
    assert sorted(os.listdir(tmp_path)) == ["out", "threaded"]
