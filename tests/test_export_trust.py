"""Exports that survive a kill at every file-system step and a full disk.

Kill points: a dry run of one export (a merged folder, tiny Llama, tokenizer included) counts its file-system
events with an audit hook (files opened for writing, folders made, renames, removals, the ctypes call of the swap);
then, for every N, a forked child dies (``os._exit``) just before event N. After each, the path must hold the old
complete export or the new one (its manifest verifies and its weights are one or the other), and a re-run must work
and leave nothing beside the path. Full disk: a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored so writes fail with
EFBIG) in the middle of the weights: one line, the previous export intact, no file left open, nothing partial.
Both run in a child process (audit hooks cannot be removed; rlimits are per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gguf")
ROOT = Path(__file__).resolve().parents[1]
WRITES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.link",
          "os.symlink", "os.chmod", "shutil.move", "shutil.copyfile", "ctypes.call_function"}


def _writes(event: str, args: tuple) -> bool:
    """Whether an audit event is a file-system step that changes something."""
    if event == "open":
        mode, flags = (args[1], args[2]) if len(args) > 2 else (args[1], 0)
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
    return event in WRITES


def _setup(root: Path, fmt: str):
    """A tiny Llama with an old export at ``root/out`` (kept as ``root/pristine``) and a changed adapter, with the
    weights of the old and of the new export."""
    import shutil

    import torch
    from helpers import make_b_nonzero
    from test_ship import bpe_tokenizer, tiny

    import lora_nb

    torch.set_num_threads(1)
    model, tok = tiny("llama"), bpe_tokenizer()
    target = root / "out"
    old = lora_nb.export(model, target, format=fmt, tokenizer=tok)
    shutil.copytree(target, root / "pristine")
    make_b_nonzero(model, scale=0.3)
    new = lora_nb.export(model, root / "reference", format=fmt, tokenizer=tok)
    return model, tok, target, _weights(old.path, fmt), _weights(new.path, fmt)


def _weights(folder: Path, fmt: str) -> bytes:
    name = "model.safetensors" if fmt == "merged" else next(p.name for p in folder.glob("*.gguf"))
    return (folder / name).read_bytes()


def _state(target: Path, fmt: str, old: bytes, new: bytes) -> str:
    """``old`` / ``new``: a complete export verified by its manifest; anything else is ``broken: …``."""
    from lora_nb.core.files import verify

    if not target.is_dir():
        return "broken: no folder"
    checked = verify(target)
    if not checked.ok:
        return f"broken: {checked}"
    weights = _weights(target, fmt)
    return "old" if weights == old else "new" if weights == new else "broken: other weights"


def _restore(root: Path, target: Path) -> None:
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(root / "pristine", target)


def _child(model, tok, target: Path, fmt: str, kill_at: int | None, out: int) -> None:
    """In a forked child: export into ``target``, dying before write event ``kill_at`` (None: count them)."""
    import lora_nb

    count = [0]

    def hook(event: str, args: tuple) -> None:
        if count[0] >= 0 and _writes(event, args):
            count[0] += 1
            if count[0] == kill_at:
                os._exit(9)

    sys.addaudithook(hook)
    lora_nb.export(model, target, format=fmt, tokenizer=tok, overwrite=True)
    total, count[0] = count[0], -1
    os.write(out, str(total).encode())
    os._exit(0)


def _fork(model, tok, target: Path, fmt: str, kill_at: int | None) -> tuple[int, str]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            _child(model, tok, target, fmt, kill_at, write)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(3)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        return os.waitstatus_to_exitcode(status), pipe.read()


def kill_everywhere(root: Path, fmt: str) -> dict:
    import lora_nb

    model, tok, target, old, new = _setup(root, fmt)
    code, counted = _fork(model, tok, target, fmt, None)
    assert code == 0, code
    events, results, broken = int(counted), {"old": 0, "new": 0}, []
    for n in range(1, events + 1):
        _restore(root, target)
        code, _ = _fork(model, tok, target, fmt, n)
        state = _state(target, fmt, old, new)
        if code != 9 or state.startswith("broken"):
            broken.append(f"kill before event {n} (exit {code}): {state}")
            continue
        results[state] += 1
        lora_nb.export(model, target, format=fmt, tokenizer=tok, overwrite=True)  # the re-run works
        left = sorted(p.name for p in root.iterdir() if p.name.startswith(".out"))
        if _state(target, fmt, old, new) != "new" or left:
            broken.append(f"re-run after a kill before event {n}: {_state(target, fmt, old, new)}, left {left}")
    return {"events": events, "tried": events, "survived": events - len(broken), **results, "broken": broken}


def full_disk(root: Path, fmt: str) -> dict:
    import resource
    import signal

    import lora_nb
    from lora_nb.errors import LoraNBError

    model, tok, target, old, new = _setup(root, fmt)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(new) // 2, hard))
    try:
        lora_nb.export(model, target, format=fmt, tokenizer=tok, overwrite=True)
        message = None
    except LoraNBError as exc:
        message = str(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    open_here = [f for f in fds if f.startswith(str(root))]
    left = sorted(p.name for p in root.iterdir() if p.name.startswith(".out"))
    partial = sorted(str(p.relative_to(root)) for p in root.rglob("*.part"))
    state = _state(target, fmt, old, new)
    lora_nb.export(model, target, format=fmt, tokenizer=tok, overwrite=True)
    return {"message": message, "state": state, "open": open_here, "left": left, "partial": partial,
            "rerun": _state(target, fmt, old, new)}


def _run(tmp_path: Path, mode: str, formats: tuple[str, ...]) -> dict:
    """``mode`` (kill | disk) for each format, in one child process (one start of torch and transformers)."""
    path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, __file__, mode, ",".join(formats), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(600)
def test_a_kill_before_any_file_system_step_leaves_the_old_export_or_the_new_one(tmp_path):
    for fmt, found in _run(tmp_path, "kill", ("merged", "gguf")).items():
        print(f"{fmt} export: {found['survived']} of {found['tried']} kill points survived "
              f"({found['old']} left the old export, {found['new']} the new one)")
        assert found["broken"] == [] and found["tried"] >= 8 and found["old"] > 0 and found["new"] > 0, fmt


@pytest.mark.timeout(600)
def test_a_full_disk_is_one_line_and_leaves_the_previous_export(tmp_path):
    for fmt, found in _run(tmp_path, "disk", ("merged", "gguf")).items():
        print(f"{fmt} export on a full disk: {found['message']}")
        message = found["message"]
        assert message is not None and "\n" not in message and "the previous folder there is intact" in message
        assert ("File too large" if fmt == "merged" else "a file-size limit was reached") in message
        assert found["state"] == "old" and found["open"] == [] and found["left"] == [] and found["partial"] == []
        assert found["rerun"] == "new", fmt


if __name__ == "__main__":
    mode, formats, where = sys.argv[1], sys.argv[2].split(","), Path(sys.argv[3])
    results = {}
    for fmt in formats:
        (where / fmt).mkdir()
        results[fmt] = (kill_everywhere if mode == "kill" else full_disk)(where / fmt, fmt)
    print(json.dumps(results))
