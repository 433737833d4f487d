"""A saved adapter survives a kill at every file-system step, a Ctrl-C at every instant and a full disk; load checks
every file against the manifest written with it."""

from __future__ import annotations

import copy
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
from fault_points import (
    DONE,
    KILLED,
    disarm,
    dry_run,
    fill,
    forked,
    interrupt_before,
    kill_before,
    one_thread,
    small_tmpfs,
)
from helpers import make_b_nonzero, mlp_with_lora, run, sample_inputs, tiny_mlp

import lora_nb
from lora_nb.core import folder_swap
from lora_nb.core.files import MANIFEST, verify
from lora_nb.errors import AdapterFileError, LoraNBWarning

WEIGHTS = "adapter_model.safetensors"



@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # these tests fork
        yield

def _weights(folder: Path) -> bytes:
    return (folder / WEIGHTS).read_bytes()


def _versions(tmp_path: Path):
    """A model whose adapter changed after it was saved: (model, pristine old folder, old bytes, new bytes)."""
    model = mlp_with_lora()
    make_b_nonzero(model, scale=0.5)
    old = lora_nb.save(model, tmp_path / "pristine" / "ad")
    make_b_nonzero(model, scale=3.0)
    new = lora_nb.save(model, tmp_path / "pristine-new" / "ad")
    return model, old, _weights(old), _weights(new)


def holds(target: Path, versions: dict[str, bytes]) -> str:
    """Which complete version ``target`` holds after lora_nb's next touch ('none' when there is none): the folder
    verifies against its manifest, loads into a fresh model, and its weights are exactly one version's."""
    folder_swap.recover(target)
    if not os.path.lexists(target):
        return "none"
    found = verify(target)
    assert found.ok, f"{target}: {found}"
    lora_nb.load(tiny_mlp(), target)
    data = _weights(target)
    name = next((name for name, expected in versions.items() if data == expected), None)
    assert name is not None, "the weights are neither version's"
    return name


def _reset(work: Path, old: Path | None) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    if old is not None:
        shutil.copytree(old, work / "ad")
    return work / "ad"


def sweep(tmp_path, overwrite: bool, journaled: bool, name: str) -> tuple[int, int]:
    """Kill a save before each of its steps; (kill points tried, survived). Survived: the path holds the old or the
    new complete adapter (never none when there was an old one), and the next save there leaves nothing stale."""
    model, old, old_bytes, new_bytes = _versions(tmp_path)
    work = tmp_path / "work"
    base = old if overwrite else None

    def save() -> str:
        if journaled:
            folder_swap.EXCHANGE = None  # in the child only: the swap of systems that cannot exchange
        return str(lora_nb.save(model, work / "ad", overwrite=overwrite))

    target = _reset(work, base)
    steps = dry_run(save)
    tried, survived, problems = 0, 0, []
    for n in range(1, len(steps) + 2):
        target = _reset(work, base)
        code = kill_before(save, n)
        assert (code == DONE) == (n > len(steps))
        tried += 1
        try:
            found = holds(target, {"old": old_bytes, "new": new_bytes})
            assert found != "none" or not overwrite, "no adapter at the path"
            assert found == "new" or code == KILLED
            lora_nb.save(model, target, overwrite=True)  # the next save there: stale staging removed
            assert os.listdir(work) == ["ad"], os.listdir(work)
            survived += 1
        except AssertionError as exc:
            problems.append(f"before step {n} ({steps[n - 1] if n <= len(steps) else 'end'}): {exc}")
    print(f"kill points {name}: {survived}/{tried} survived ({len(steps)} steps)")
    assert not problems, problems
    return tried, survived


@pytest.mark.parametrize("overwrite, journaled, name", [
    (False, False, "save"), (True, False, "save --overwrite (renameat2 exchange)"),
    (True, True, "save --overwrite (journaled swap)"),
])
def test_a_save_killed_before_any_step_leaves_the_old_or_the_new_adapter(tmp_path, overwrite, journaled, name):
    tried, survived = sweep(tmp_path, overwrite, journaled, name)
    assert tried == survived and tried > 10


def _interrupt_sweep(model, work: Path, old: Path, versions: dict[str, bytes], how: str, journaled: bool) -> dict:
    """In a child: a Ctrl-C before each step of an overwriting save; the states found."""
    if journaled:
        folder_swap.EXCHANGE = None
    results = {"tried": 0, "old": 0, "new": 0, "interrupted": 0}
    n = 1
    while True:
        target = _reset(work, old)
        interrupt_before(n, how)
        interrupted = False
        try:
            lora_nb.save(model, target, overwrite=True)
            for _ in range(1000):  # a signal is handled at the next bytecode boundary
                pass
        except KeyboardInterrupt:
            interrupted = True
        steps = disarm()
        if not interrupted and steps < n:
            break  # past the last step
        results["tried"] += 1
        results["interrupted"] += interrupted
        results[holds(target, versions)] += 1  # 'none' would fail here: KeyError
        n += 1
    return results


@pytest.mark.parametrize("how", ["raise", "signal"])
@pytest.mark.parametrize("journaled", [False, True])
def test_ctrl_c_at_every_instant_of_a_save_never_deletes_a_complete_adapter(tmp_path, how, journaled):
    """KeyboardInterrupt raised before each step (`raise`), or SIGINT sent to the process there (`signal`, what
    Ctrl-C does; deferred across the swap): the path holds the old or the new adapter, never none."""
    model, old, old_bytes, new_bytes = _versions(tmp_path)
    previous = signal.getsignal(signal.SIGINT)
    code, report = forked(lambda: _interrupt_sweep(model, tmp_path / "work", old, {"old": old_bytes, "new": new_bytes},
                                                   how, journaled))
    signal.signal(signal.SIGINT, previous)
    assert code == DONE, report.get("error")
    found = report["result"]
    print(f"Ctrl-C ({how}, {'journaled' if journaled else 'exchange'}): {found}")
    assert found["tried"] > 10 and found["old"] + found["new"] == found["tried"]
    assert found["interrupted"] > 0 and found["old"] > 0 and found["new"] > 0


def _save_with_file_size_limit(model, target: Path, limit: int) -> str:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        lora_nb.save(model, target, overwrite=True)
    except AdapterFileError as exc:
        return str(exc)
    return "saved"


@pytest.mark.parametrize("limit", [0, 600, 1500, 2600])
def test_a_full_disk_is_one_line_and_leaves_the_previous_save(tmp_path, limit):
    model, old, old_bytes, _ = _versions(tmp_path)
    target = _reset(tmp_path / "work", old)
    code, report = forked(lambda: _save_with_file_size_limit(model, target, limit))
    assert code == DONE, report.get("error")
    message = report["result"]
    assert message != "saved" and "\n" not in message and "File too large" in message, message
    assert "any previous save is intact" in message
    assert holds(target, {"old": old_bytes}) == "old" and os.listdir(target.parent) == ["ad"]


def test_a_real_full_disk_on_a_small_tmpfs_and_the_save_after_space_returns(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        if disk is None:
            pytest.skip("mounting a tmpfs is not allowed here (the file-size limit test covers a full disk)")
        model, _, old_bytes, new_bytes = _versions(tmp_path)
        target = lora_nb.save(model, disk / "ad")  # the new weights, then older ones over them
        shutil.rmtree(target)
        shutil.copytree(tmp_path / "pristine" / "ad", target)
        filler = fill(disk)
        with pytest.raises(AdapterFileError, match="No space left on device.*any previous save is intact") as info:
            lora_nb.save(model, target, overwrite=True)
        assert "\n" not in str(info.value)
        assert holds(target, {"old": old_bytes}) == "old" and sorted(os.listdir(disk)) == ["ad", "filler"]
        os.remove(filler)  # space returns
        lora_nb.save(model, target, overwrite=True)
        assert holds(target, {"new": new_bytes}) == "new" and os.listdir(disk) == ["ad"]


# ---------------------------------------------------------------- corrupt files


def _flip_a_bit_of_tensor_data(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header] ^= 1  # the lowest mantissa bit of the first float: still finite, nearly the same value
    path.write_bytes(bytes(data))


def test_a_flipped_bit_is_refused_naming_the_file(tmp_path):
    model = mlp_with_lora()
    make_b_nonzero(model)
    path = lora_nb.save(model, tmp_path / "ad")
    _flip_a_bit_of_tensor_data(path / WEIGHTS)
    fresh = tiny_mlp()
    with pytest.raises(AdapterFileError, match=f"{WEIGHTS} differs from what was saved") as info:
        lora_nb.load(fresh, path)
    assert "\n" not in str(info.value) and str(path / WEIGHTS) in str(info.value)
    assert lora_nb.core.registry.find(fresh) is None  # nothing changed
    (path / "lora_nb_record.json").write_text("{}")
    with pytest.raises(AdapterFileError, match=r"\(and 1 more\) differs"):
        lora_nb.load(fresh, path)


def test_a_truncated_file_or_manifest_is_refused(tmp_path):
    model = mlp_with_lora()
    path = lora_nb.save(model, tmp_path / "ad")
    (path / WEIGHTS).write_bytes(_weights(path)[:-7])
    with pytest.raises(AdapterFileError, match=f"{WEIGHTS} is not a readable safetensors file"):
        lora_nb.load(tiny_mlp(), path)
    path = lora_nb.save(model, tmp_path / "ad", overwrite=True)
    (path / MANIFEST).write_text((path / MANIFEST).read_text()[:40])
    with pytest.raises(AdapterFileError, match=f"{MANIFEST} differs"):
        lora_nb.load(tiny_mlp(), path)


def test_a_folder_without_manifest_loads_and_says_so_once(tmp_path):
    model = tiny_mlp()
    fresh = copy.deepcopy(model)  # the same base weights
    lora_nb.attach(model, r=4)
    make_b_nonzero(model)
    path = lora_nb.save(model, tmp_path / "ad")
    os.remove(path / MANIFEST)
    with pytest.warns(LoraNBWarning, match=f"has no {MANIFEST}.*unchecked") as caught:
        lora_nb.load(fresh, path)
    assert len([w for w in caught if issubclass(w.category, LoraNBWarning)]) == 1
    x = sample_inputs(fresh)
    assert (run(fresh, x) - run(model, x)).abs().max() < 1e-6


def test_a_save_cleans_what_earlier_releases_left_after_a_kill(tmp_path):
    """`.NAME.saving-*` staging and a `.NAME.old-*` folder whose successor is in place are removed; an old folder
    renamed aside with nothing at the path (killed between the two renames) is put back first."""
    model = mlp_with_lora()
    path = lora_nb.save(model, tmp_path / "ad")
    (tmp_path / ".ad.saving-abcd1234").mkdir()
    shutil.copytree(path, tmp_path / ".ad.old-1234abcd")
    lora_nb.save(model, path, overwrite=True)
    assert os.listdir(tmp_path) == ["ad"]
    os.rename(path, tmp_path / ".ad.old-99999999")
    lora_nb.load(tiny_mlp(), path)  # lora_nb's next touch of the path puts it back
    assert os.listdir(tmp_path) == ["ad"]
